"""Top-1 agreement of every engine with torch FP32 on CPU, on a held-out split of a trained run.

    python -m bench.engine_agreement --run RUN_DIR --data DATASET_DIR [--artifact ARTIFACT] [--split test]

The quantize guard does this for INT8 when it writes an artifact; this script does it for any engine the machine
has, including the CUDA ones (FP32/TF32, FP16, BF16), so a GPU path is checked on the model it will serve and not
only on random weights. Prints a table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.model_bench import machine_info, save_result
from models import data as ds
from models.engines import cuda_status, load_engine

CPU_KINDS = ("torch-fp32", "torch-bf16")
CUDA_KINDS = ("torch-fp32", "torch-fp16", "torch-bf16")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Engine agreement with FP32 on a held-out split", add_help=add_help)
    p.add_argument("--run", required=True, type=Path, help="training run directory (best.pt + split.json)")
    p.add_argument("--data", required=True, type=Path, help="the dataset folder the run was trained on")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split to score (default: test)")
    p.add_argument(
        "--artifact", type=Path, default=None, help="INT8 artifact of the same model: adds openvino-int8 (optional)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per predict call (default: 32)")
    p.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="JSON output folder (default: bench/results)"
    )
    return p


def _predict(engine: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([engine.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def main(args: argparse.Namespace) -> dict[str, Any]:
    checkpoint = args.run / "best.pt"
    reference = load_engine(checkpoint, kind="torch-fp32", device="cpu")
    records = ds.locate(ds.load_split(args.run / "split.json")[args.split], args.data)
    reencode = json.loads((args.run / "args.json").read_text()).get("reencode", "none")
    dataset = ds.ImageDataset(
        records, reference.class_names, reference.input_size, reencode=reencode, mean=reference.mean, std=reference.std
    )
    x = np.stack([dataset[i][0].numpy() for i in range(len(dataset))])
    y = np.asarray(dataset.labels)
    p_ref = _predict(reference, x, args.batch_size)

    engines: list[tuple[str, str, Path, str]] = [(k, "cpu", checkpoint, k) for k in CPU_KINDS]
    if args.artifact is not None:
        engines.append(("openvino-int8", "cpu", args.artifact, "openvino-int8"))
    cuda_ok, cuda_why = cuda_status()
    if cuda_ok:
        engines += [(f"{k}-cuda", "cuda", checkpoint, k) for k in CUDA_KINDS]
    rows = []
    for name, device, path, kind in engines:
        engine = load_engine(path, kind=kind, device=device)
        probs = _predict(engine, x, args.batch_size)
        rows.append(
            {
                "engine": name,
                "top1_agreement": float((probs.argmax(1) == p_ref.argmax(1)).mean()),
                "disagreements": int((probs.argmax(1) != p_ref.argmax(1)).sum()),
                "accuracy": float((probs.argmax(1) == y).mean()),
                "max_abs_prob_diff": float(np.abs(probs - p_ref).max()),
            }
        )
    ref_acc = float((p_ref.argmax(1) == y).mean())
    result = {
        "machine": machine_info(torch.get_num_threads()),
        "run": str(args.run),
        "split": args.split,
        "images": len(y),
        "reference": {"engine": "torch-fp32 (cpu)", "accuracy": ref_acc},
        "cuda": cuda_why,
        "rows": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"{args.run} {args.split}: {len(y)} images; reference torch-fp32 on CPU accuracy {ref_acc:.4f}; {cuda_why}")
    print("| engine | top-1 agreement | disagreements | accuracy | max abs prob diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['top1_agreement']:.4f} | {r['disagreements']} | {r['accuracy']:.4f} "
            f"| {r['max_abs_prob_diff']:.2e} |"
        )
    save_result(args.out, "engine_agreement", result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
