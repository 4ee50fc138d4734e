"""Evaluate a trained classifier: ``defectstream evaluate --model RUN_DIR --data DIR --split test --out REPORT_DIR``.

Writes ``report.json`` (every metric and every misclassified image), ``confusion_matrix.json`` / ``.png``,
``reliability.png`` and ``summary.md``.
The split is the one stored in the run directory (``split.json``), matched to ``--data`` by content hash, so
evaluation uses exactly the images training held out even if the dataset folder moved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from models import data as ds
from models.checkpoint import load_checkpoint
from models.engines.torch_engine import select_device
from models.metrics import classification_report
from models.report import markdown_summary, misclassified, plot_confusion, plot_reliability
from models.train import predict_probs


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a defect classifier", add_help=add_help)
    p.add_argument(
        "--model", required=True, type=Path, help="run directory (uses best.pt and split.json) or a checkpoint file"
    )
    p.add_argument("--data", required=True, type=Path, help="dataset folder or CSV manifest")
    p.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test", "all"],
        help="which split of the run to score; 'all' = every image in --data (default: test)",
    )
    p.add_argument("--out", required=True, type=Path, help="report directory")
    p.add_argument("--reencode", default=None, choices=ds.REENCODINGS, help="default: what training used")
    p.add_argument("--tta", action="store_true", help="average flips at test time (default: off)")
    p.add_argument("--ok-class", default="ok", help="class meaning a good part (default: ok)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    return p


def _records(args: argparse.Namespace, run_dir: Path | None) -> list[ds.ImageRecord]:
    available, _ = ds.dedupe(ds.discover(args.data))
    if args.split == "all":
        return available
    if run_dir is None or not (run_dir / "split.json").exists():
        raise FileNotFoundError(
            f"--split {args.split} needs a run directory with split.json; use --split all for a plain checkpoint"
        )
    return ds.locate(ds.load_split(run_dir / "split.json")[args.split], args.data)


def main(args: argparse.Namespace) -> dict[str, Any]:
    run_dir = args.model if args.model.is_dir() else None
    checkpoint = run_dir / "best.pt" if run_dir else args.model
    model, meta = load_checkpoint(checkpoint)
    reencode = args.reencode or meta.args.get("reencode", "none")
    records = _records(args, run_dir)
    dataset = ds.ImageDataset(
        records, meta.class_names, meta.input_size, reencode=reencode, mean=meta.mean, std=meta.std
    )
    device = select_device(args.device)
    probs = predict_probs(model.to(device), dataset, device, tta=args.tta)
    report = classification_report(probs, dataset.labels, meta.class_names, args.ok_class)
    report["misclassified"] = misclassified(probs, dataset.labels, [r.path for r in records], meta.class_names)
    args.out.mkdir(parents=True, exist_ok=True)
    context = {
        "model": f"{checkpoint} ({meta.backbone}, input {meta.input_size}px, version {meta.version})",
        "data": f"{args.data} split={args.split} ({len(records)} images, fingerprint {ds.fingerprint(records)})",
        "re-encoding": reencode,
        "test-time augmentation": "flips" if args.tta else "off",
        "trained by code": meta.args.get("code_version", "unknown"),
        "torch threads": torch.get_num_threads(),
    }
    (args.out / "report.json").write_text(json.dumps({"context": context, **report}, indent=2))
    (args.out / "confusion_matrix.json").write_text(
        json.dumps({"class_names": meta.class_names, "matrix": report["confusion_matrix"]})
    )
    plot_confusion(report, args.out / "confusion_matrix.png")
    plot_reliability(report, args.out / "reliability.png")
    (args.out / "summary.md").write_text(markdown_summary(report, context))
    print(
        f"{args.split}: accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}, ECE {report['ece']:.4f}"
        + (
            f", detection rate {report['detection_rate']:.4f}, FPR {report['false_positive_rate']:.4f}"
            if "detection_rate" in report
            else ""
        )
        + f" -> {args.out / 'summary.md'}"
    )
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
