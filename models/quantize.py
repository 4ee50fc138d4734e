"""Post-training INT8 quantization with an accuracy guard:
``defectstream quantize --model RUN_DIR --calib DIR --out ARTIFACT``.

1. The FP32 checkpoint (``RUN_DIR/best.pt``) is converted to OpenVINO and quantized by NNCF, calibrated on real
   *training* images of the run (its ``split.json`` train split, found in ``--calib`` by content hash), never on the
   held-out split.
2. FP32 (torch) and INT8 (OpenVINO) are both scored on the held-out split (default: the run's test split): top-1
   agreement and accuracy of each.
3. If agreement < ``--min-agreement`` (99.5%) or accuracy drops by more than ``--max-drop`` (0.5 points), nothing is
   written and the command fails. Otherwise the artifact directory is written atomically with the numbers in its
   ``artifact.json``.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import data as ds
from models.checkpoint import load_checkpoint
from models.engines.artifact import CHECKPOINT_FILE, ArtifactMeta, sha256_file, write_meta
from models.engines.openvino_engine import MODEL_FILE, OpenVINOEngine
from models.engines.torch_engine import TorchEngine
from models.stop_signals import ExitOnStopSignals
from models.train import code_version

# Parts of DefectClassifier that can be kept in FP32: the first conv (sees raw pixels), the attention conv (its
# sigmoid mask scales every feature) and the two head layers (the logits themselves).
FP32_PARTS = ("stem", "attention", "head")


class QuantizationRefused(RuntimeError):
    """The INT8 model disagrees with FP32 beyond the guard's limits; no artifact was written."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Quantize a trained classifier to INT8 with an accuracy guard", add_help=add_help
    )
    p.add_argument("--model", required=True, type=Path, help="run directory (best.pt + split.json)")
    p.add_argument("--calib", required=True, type=Path, help="dataset folder holding the run's training images")
    p.add_argument(
        "--data", type=Path, default=None, help="dataset folder holding the held-out split (default: --calib)"
    )
    p.add_argument("--out", required=True, type=Path, help="artifact directory to write")
    p.add_argument("--calib-size", type=int, default=300, help="calibration images, stratified (default: 300)")
    p.add_argument(
        "--eval-split", default="test", choices=["val", "test"], help="held-out split for the guard (default: test)"
    )
    p.add_argument(
        "--min-agreement", type=float, default=0.995, help="minimum INT8/FP32 top-1 agreement (default: 0.995)"
    )
    p.add_argument(
        "--max-drop", type=float, default=0.005, help="maximum accuracy drop, as a fraction (default: 0.005)"
    )
    p.add_argument(
        "--fp32-parts",
        default="",
        help=f"comma-separated parts kept in FP32, of {', '.join(FP32_PARTS)} (default: none, all INT8)",
    )
    p.add_argument(
        "--preset",
        default="performance",
        choices=["performance", "mixed"],
        help="NNCF preset: performance = symmetric INT8, mixed = asymmetric activations (default: performance)",
    )
    p.add_argument(
        "--bias-correction",
        default="fast",
        choices=["fast", "full"],
        help="NNCF bias correction: fast, or full (slower, closer to FP32) (default: fast)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for picking calibration images (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = all (default: 0)")
    p.add_argument("--force", action="store_true", help="replace an existing artifact at --out")
    return p


def stratified_subset(records: list[ds.ImageRecord], size: int, seed: int) -> list[ds.ImageRecord]:
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[ds.ImageRecord]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    pools = [list(rng.permutation(np.array(v, dtype=object))) for _, v in sorted(by_label.items())]
    chosen: list[ds.ImageRecord] = []
    while len(chosen) < min(size, len(records)):
        for pool in pools:
            if pool and len(chosen) < size:
                chosen.append(pool.pop())
    return chosen


def pixel_value_range(mean: list[float], std: list[float]) -> tuple[float, float]:
    """The range a normalized input can take: pixel 0 and pixel 255 in the most extreme channel."""
    m, sd = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    return float((-m / sd).min()), float(((1.0 - m) / sd).max())


def input_quantizer_range(lo: float, hi: float, levels: int, symmetric: bool) -> tuple[float, float]:
    """The narrowest quantizer range over ``levels`` steps that covers [lo, hi] and has zero exactly on its grid
    (zero padding and ReLU zeros must stay exact; OpenVINO also rounds a fractional zero point)."""
    if lo >= 0:
        return 0.0, hi
    if symmetric:  # NNCF's signed symmetric form: [-a, a * (half - 1) / half], zero point = half
        half = levels // 2
        a = max(-lo, hi * half / (half - 1))
        return -a, a * (half - 1) / half
    steps = levels - 1
    ideal = steps * -lo / (hi - lo)
    candidates = {min(max(z, 1), steps - 1) for z in (int(np.floor(ideal)), int(np.ceil(ideal)))}
    step, zero_point = min((max(-lo / z, hi / (steps - z)), z) for z in candidates)
    return -zero_point * step, (steps - zero_point) * step


def pin_input_quantizer(ov_model: Any, mean: list[float], std: list[float], symmetric: bool) -> tuple[float, float]:
    """Widen the quantizer on the model input to the full pixel range; returns the (low, high) it now spans.

    Why: NNCF's calibration sets activation ranges from statistics that trim the extremes, which is right deep in
    the network and wrong at the input, whose range is known exactly. On the NEU ResNet-50 it clipped every pixel
    brighter than ~242 to 242, and that alone caused the stem's INT8 flips (mean |p_int8 - p_fp32| 0.0039 ->
    0.0005 on the test split once pinned)."""
    import openvino as ov

    (parameter,) = ov_model.get_parameters()
    quantizers = [
        t.get_node() for t in parameter.output(0).get_target_inputs() if t.get_node().get_type_name() == "FakeQuantize"
    ]
    if not quantizers:
        raise RuntimeError("no quantizer directly on the model input; the INT8 graph is not the expected one")
    for fq in quantizers:
        bounds = [fq.input_value(port).get_node() for port in range(1, 5)]
        if fq.get_levels() != 256 or any(b.get_type_name() != "Constant" or b.get_data().size != 1 for b in bounds):
            raise RuntimeError(f"input quantizer {fq.get_friendly_name()} is not a per-tensor 256-level one")
    low, high = input_quantizer_range(*pixel_value_range(mean, std), 256, symmetric)
    for fq in quantizers:
        for port, value in zip(range(1, 5), (low, high, low, high), strict=True):
            const = ov.opset13.constant(np.array(value, dtype=np.float32))
            fq.input(port).replace_source_output(const.output(0))
    ov_model.validate_nodes_and_infer_types()
    return low, high


def _fp32_op_names(ov_model: Any, parts: tuple[str, ...]) -> list[str]:
    unknown = set(parts) - set(FP32_PARTS)
    if unknown:
        raise ValueError(f"unknown FP32 parts {sorted(unknown)}; choose from {', '.join(FP32_PARTS)}")
    ops = ov_model.get_ordered_ops()
    names: list[str] = []
    if "stem" in parts:  # OpenVINO renames BN-folded backbone convs, so the stem is found by order, not by name
        names += [next(op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution")]
    for part in ("attention", "head"):
        if part in parts:
            found = [op.get_friendly_name() for op in ops if f"__module.{part}" in op.get_friendly_name()]
            if not found:
                raise RuntimeError(f"no {part} ops found in the converted model")
            names += found
    return names


def quantize_openvino(
    model: torch.nn.Module,
    calibration: list[np.ndarray],
    input_size: int,
    *,
    normalization: tuple[list[float], list[float]],
    fp32_parts: tuple[str, ...] = (),
    preset: str = "performance",
    bias_correction: str = "fast",
) -> tuple[Any, list[str], tuple[float, float] | None]:
    """Convert a torch classifier to OpenVINO and quantize it with NNCF; returns the INT8 model, the names of
    the ops kept in FP32 and the input quantizer's range. ``normalization`` (mean, std) gives the input's exact
    range (:func:`pin_input_quantizer`)."""
    import nncf
    import openvino as ov

    ov_model = ov.convert_model(
        model,
        example_input=torch.zeros(1, 3, input_size, input_size),
        input=[ov.PartialShape([-1, 3, input_size, input_size])],
    )
    ignored = None
    names = _fp32_op_names(ov_model, fp32_parts)
    if names:
        ignored = nncf.IgnoredScope(names=names, validate=False)
    quantized = nncf.quantize(
        ov_model,
        nncf.Dataset(calibration),
        subset_size=len(calibration),
        # performance = symmetric INT8: the fast path of CPU VNNI/AMX kernels; mixed = asymmetric activations
        preset=nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED,
        fast_bias_correction=bias_correction == "fast",
        ignored_scope=ignored,
    )
    # With the stem in FP32 nothing quantizes the input itself; the first quantizer sits after the stem.
    input_range = (
        None if "stem" in fp32_parts else pin_input_quantizer(quantized, *normalization, preset == "performance")
    )
    return quantized, (ignored.names if ignored else []), input_range


def _batches(dataset: ds.ImageDataset, batch_size: int = 32) -> list[np.ndarray]:
    items = [dataset[i][0].numpy() for i in range(len(dataset))]
    return [np.stack(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    run: Path = args.model
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}-", dir=args.out.parent))
    cleanup = functools.partial(shutil.rmtree, tmp, ignore_errors=True)
    try:
        with ExitOnStopSignals(cleanup, "quantize") as stop:
            return _quantize(args, run, tmp, stop)
    finally:
        cleanup()


def _quantize(args: argparse.Namespace, run: Path, tmp: Path, stop: ExitOnStopSignals) -> dict[str, Any]:
    import openvino as ov

    # Work on a private copy: training may still replace best.pt, and the INT8 model, the stored checkpoint,
    # its hash and the FP32 reference must all be the same weights.
    checkpoint = tmp / CHECKPOINT_FILE
    shutil.copy2(run / "best.pt", checkpoint)
    model, meta = load_checkpoint(checkpoint)
    splits = ds.load_split(run / "split.json")
    reencode = meta.args.get("reencode", "none")
    calib_records = stratified_subset(ds.locate(splits["train"], args.calib), args.calib_size, args.seed)
    eval_records = ds.locate(splits[args.eval_split], args.data or args.calib)
    calib_set = ds.ImageDataset(
        calib_records, meta.class_names, meta.input_size, reencode=reencode, mean=meta.mean, std=meta.std
    )
    eval_set = ds.ImageDataset(
        eval_records, meta.class_names, meta.input_size, reencode=reencode, mean=meta.mean, std=meta.std
    )
    size = meta.input_size
    print(
        f"calibrating on {len(calib_set)} training images, guarding on {len(eval_set)} {args.eval_split} images",
        flush=True,
    )

    started = time.perf_counter()
    quantized, fp32_ops, input_range = quantize_openvino(
        model,
        [calib_set[i][0].numpy()[None] for i in range(len(calib_set))],
        size,
        fp32_parts=tuple(p for p in args.fp32_parts.split(",") if p),
        preset=args.preset,
        bias_correction=args.bias_correction,
        normalization=(meta.mean, meta.std),
    )
    quantize_seconds = time.perf_counter() - started

    ov.save_model(quantized, str(tmp / MODEL_FILE), compress_to_fp16=False)
    calib_fp = ds.fingerprint(calib_records)
    artifact_meta = ArtifactMeta(
        engine="openvino-int8",
        class_names=list(meta.class_names),
        input_size=size,
        mean=list(meta.mean),
        std=list(meta.std),
        version=f"{meta.version}-int8",
        backbone=meta.backbone,
        source_checkpoint_sha256=sha256_file(checkpoint),
        calibration={
            "images": len(calib_records),
            "fingerprint": calib_fp,
            "split": "train",
            "seed": args.seed,
            "fp32_ops": fp32_ops,
            "input_range": list(input_range) if input_range else None,
            "preset": args.preset,
            "bias_correction": args.bias_correction,
            "reencode": reencode,
        },
        accuracy={},
        code_version=code_version(),
    )
    write_meta(tmp, artifact_meta)

    y = np.asarray(eval_set.labels)
    batches = _batches(eval_set)
    fp32 = TorchEngine(checkpoint, device="cpu", precision="fp32")
    int8 = OpenVINOEngine(tmp, threads=args.threads or None)
    p32 = np.concatenate([fp32.predict(b) for b in batches])
    # The engine serves single images with a static-shape plan and batches with a dynamic one; their results
    # differ in the last digits, so both are scored and the guard holds for the worse.
    batched = np.concatenate([int8.predict(b) for b in batches])
    single = np.concatenate([int8.predict(b[i : i + 1]) for b in batches for i in range(len(b))])
    agreement = min(float((p32.argmax(1) == p.argmax(1)).mean()) for p in (batched, single))
    acc32 = float((p32.argmax(1) == y).mean())
    acc8 = min(float((p.argmax(1) == y).mean()) for p in (batched, single))
    accuracy = {
        "split": args.eval_split,
        "images": len(eval_set),
        "fingerprint": ds.fingerprint(eval_records),
        "fp32_accuracy": acc32,
        "int8_accuracy": acc8,
        "top1_agreement": agreement,
        "accuracy_drop_points": round((acc32 - acc8) * 100, 3),
        "top1_agreement_batched": float((p32.argmax(1) == batched.argmax(1)).mean()),
        "top1_agreement_single": float((p32.argmax(1) == single.argmax(1)).mean()),
        "max_abs_prob_diff": float(max(np.abs(p32 - batched).max(), np.abs(p32 - single).max())),
        "min_agreement": args.min_agreement,
        "max_drop": args.max_drop,
        "quantize_seconds": round(quantize_seconds, 1),
    }
    print(
        f"FP32 accuracy {acc32:.4f}, INT8 accuracy {acc8:.4f}, top-1 agreement {agreement:.4f} "
        f"on {len(eval_set)} {args.eval_split} images",
        flush=True,
    )
    if agreement < args.min_agreement or acc32 - acc8 > args.max_drop:
        raise QuantizationRefused(
            f"INT8 model refused: agreement {agreement:.4f} (min {args.min_agreement}), accuracy drop "
            f"{(acc32 - acc8) * 100:.2f} points (max {args.max_drop * 100:.2f}); no artifact written"
        )
    artifact_meta.accuracy = accuracy
    write_meta(tmp, artifact_meta)
    if args.out.exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to replace it")
    # Replace by renames: at every moment --out is either the old or the new complete artifact.
    old = args.out.with_name(f".{args.out.name}-old-{int(time.time())}")
    stop.finishing()  # a stop between the two renames would leave no artifact at --out
    if args.out.exists():
        args.out.rename(old)
    tmp.rename(args.out)
    shutil.rmtree(old, ignore_errors=True)
    print(f"wrote {args.out} ({artifact_meta.engine}, version {artifact_meta.version})")
    return accuracy
