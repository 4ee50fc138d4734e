"""INT8 quantization variants of one trained run, scored against its FP32 model on the val AND test splits.

    python -m bench.int8_variants --run RUN_DIR --data DATASET_DIR [--variants default,fp32-attention,...]

Pick a variant by its *val* agreement, then let ``defectstream quantize`` (which guards on test) build it: choosing
by test agreement would tune the quantizer to the very images the guard reports on. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.model_bench import machine_info, save_result
from models import data as ds
from models.checkpoint import load_checkpoint
from models.engines.openvino_engine import COMPILE_CONFIG, softmax
from models.engines.torch_engine import TorchEngine
from models.quantize import quantize_openvino, stratified_subset

# name -> (calibration images, parts kept in FP32, preset, bias_correction)
VARIANTS: dict[str, tuple[int, tuple[str, ...], str, str]] = {
    "default": (300, (), "performance", "fast"),
    "fp32-attention": (300, ("attention",), "performance", "fast"),
    "fp32-attention-head": (300, ("attention", "head"), "performance", "fast"),
    "fp32-stem-attention-head": (300, ("stem", "attention", "head"), "performance", "fast"),
    "calib-all": (100_000, (), "performance", "fast"),
    "full-bias": (300, (), "performance", "full"),
    "mixed": (300, (), "mixed", "fast"),
}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="INT8 quantization variants vs FP32 on val and test", add_help=add_help)
    p.add_argument("--run", required=True, type=Path, help="training run directory (best.pt + split.json)")
    p.add_argument("--data", required=True, type=Path, help="the dataset folder the run was trained on")
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all)"
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = all (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed for picking calibration images (default: 0)")
    p.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="JSON output folder (default: bench/results)"
    )
    return p


def _stack(dataset: ds.ImageDataset) -> np.ndarray:
    return np.stack([dataset[i][0].numpy() for i in range(len(dataset))])


def _predict(fn: Any, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def main(args: argparse.Namespace) -> dict[str, Any]:
    import openvino as ov
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.run / "best.pt"
    model, meta = load_checkpoint(checkpoint)
    splits = ds.load_split(args.run / "split.json")
    reencode = meta.args.get("reencode", "none")

    def dataset(records: list[ds.ImageRecord]) -> ds.ImageDataset:
        return ds.ImageDataset(
            records, meta.class_names, meta.input_size, reencode=reencode, mean=meta.mean, std=meta.std
        )

    held_out = {name: dataset(ds.locate(splits[name], args.data)) for name in ("val", "test")}
    x = {name: _stack(d) for name, d in held_out.items()}
    y = {name: np.asarray(d.labels) for name, d in held_out.items()}
    fp32 = TorchEngine(checkpoint, device="cpu", precision="fp32")
    ref = {name: _predict(fp32.predict, x[name]) for name in x}
    train_records = ds.locate(splits["train"], args.data)

    config: dict[str, str | int | bool] = dict(COMPILE_CONFIG)
    if args.threads:
        config["INFERENCE_NUM_THREADS"] = args.threads
    rows: list[dict[str, Any]] = []
    for name in args.variants.split(","):
        calib_size, fp32_parts, preset, bias = VARIANTS[name]
        calib = dataset(stratified_subset(train_records, calib_size, args.seed))
        started = time.perf_counter()
        quantized, fp32_ops, _ = quantize_openvino(
            model,
            [calib[i][0].numpy()[None] for i in range(len(calib))],
            meta.input_size,
            fp32_parts=fp32_parts,
            preset=preset,
            bias_correction=bias,
            normalization=(meta.mean, meta.std),
        )
        seconds = time.perf_counter() - started
        request = ov.Core().compile_model(quantized, "CPU", config).create_infer_request()

        def int8_predict(b: np.ndarray, request: Any = request) -> np.ndarray:
            return softmax(np.asarray(request.infer({0: b})[0], dtype=np.float32))

        row: dict[str, Any] = {"variant": name, "calibration_images": len(calib), "fp32_ops": len(fp32_ops)}
        for split in ("val", "test"):
            p8 = _predict(int8_predict, x[split])
            flips = int((p8.argmax(1) != ref[split].argmax(1)).sum())
            row[f"{split}_flips"] = flips
            row[f"{split}_agreement"] = 1 - flips / len(p8)
            row[f"{split}_fp32_accuracy"] = float((ref[split].argmax(1) == y[split]).mean())
            row[f"{split}_int8_accuracy"] = float((p8.argmax(1) == y[split]).mean())
        row["quantize_seconds"] = round(seconds, 1)
        rows.append(row)
        print(row, flush=True)

    print(f"\nINT8 variants of {checkpoint} ({meta.backbone}, {meta.input_size} px)")
    print(
        f"{'variant':28} {'calib':>6} {'val flips':>9} {'val agree':>9} {'test flips':>10} {'test agree':>10} "
        f"{'test fp32':>9} {'test int8':>9}"
    )
    for r in rows:
        print(
            f"{r['variant']:28} {r['calibration_images']:6d} {r['val_flips']:9d} {r['val_agreement']:9.4f} "
            f"{r['test_flips']:10d} {r['test_agreement']:10.4f} {r['test_fp32_accuracy']:9.4f} "
            f"{r['test_int8_accuracy']:9.4f}"
        )
    result = {"run": str(args.run), "machine": machine_info(args.threads or torch.get_num_threads()), "rows": rows}
    save_result(args.out, "int8_variants", result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
