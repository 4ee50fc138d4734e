"""Model benchmark: engines x batch sizes -> p50/p99 latency and images/s, plus decode+preprocess cost, in one run.

    python bench/model_bench.py --model ARTIFACT [--data DATASET_DIR --run RUN_DIR] [--threads 2]
    defectstream bench-model ...   (same arguments)

``--model`` is an INT8 artifact (every engine) or a checkpoint file (torch engines only, e.g. on a GPU machine
without OpenVINO). The ``*-cuda`` engines run where CUDA exists and are listed as skipped elsewhere.

Prints a table and writes JSON (machine, versions, every number) to --out. Ratios are computed inside one run,
because the machines this runs on are shared and noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from models import synthetic
from models.engines import cuda_status, load_engine
from models.engines.artifact import CHECKPOINT_FILE, read_meta
from models.preprocess import decode_image, preprocess_batch

# CPU engines only: the INT8 targets compare CPU engines on the same cores.
TRUE_FP32 = {"torch-fp32", "openvino-fp32", "onnxruntime-fp32"}
INT8 = {"openvino-int8", "onnxruntime-int8"}
DEFAULT_ENGINE = "openvino-int8"
CUDA_ENGINES = ("torch-fp32-cuda", "torch-fp16-cuda", "torch-bf16-cuda")
ALL_ENGINES = (
    "torch-fp32",
    "torch-bf16",
    "openvino-fp32",
    "onnxruntime-fp32",
    "openvino-int8",
    "onnxruntime-int8",
    *CUDA_ENGINES,
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark inference engines and preprocessing", add_help=add_help)
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="INT8 artifact from `defectstream quantize`, or a checkpoint file (then torch engines only)",
    )
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated batch sizes (default: 1,8,32)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="inference threads (default: all cores)")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per engine and batch size (default: 4)")
    p.add_argument("--min-iters", type=int, default=15, help="at least this many timed batches (default: 15)")
    p.add_argument(
        "--rounds",
        type=_positive_int,
        default=4,
        help="engines are timed in turn this many times, --seconds split over the rounds (default: 4)",
    )
    p.add_argument(
        "--engines",
        default=",".join(ALL_ENGINES),
        help="engines to run (default: all; *-cuda only where CUDA exists)",
    )
    p.add_argument("--compile", action="store_true", help="also torch.compile BF16 (10-16 s cold start per shape)")
    p.add_argument("--data", type=Path, default=None, help="dataset folder for the reduced-decode accuracy check")
    p.add_argument("--run", type=Path, default=None, help="run directory whose test split --data holds")
    p.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="JSON output folder (default: bench/results)"
    )
    return p


def code_version() -> dict[str, Any] | None:
    """The commit the benchmark ran and whether the tree had uncommitted changes: a figure without it cannot be
    traced to code. None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=7", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "uncommitted_changes": bool(status)}


def save_result(out: Path, name: str, result: dict[str, Any]) -> Path:
    """Write a benchmark's JSON as ``out/<name>-<UTC timestamp>.json``, with the code version it ran."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({**result, "code": code_version()}, indent=2))
    print(f"\nwrote {path}")
    return path


def machine_info(threads: int) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
    }
    for mod in ("openvino", "onnxruntime", "nncf"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        # Fewer under taskset or a cpuset (a pod's share of a node): what this run could actually use.
        "usable_cpus": len(os.sched_getaffinity(0)),
        "threads": threads,
        "versions": versions,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_runtime": torch.version.cuda,
    }


def _openvino_fp32(checkpoint: Path, size: int, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    from models.checkpoint import load_checkpoint
    from models.engines.openvino_engine import COMPILE_CONFIG, ServingPlans

    model, _ = load_checkpoint(checkpoint)
    ov_model = ov.convert_model(
        model, example_input=torch.zeros(1, 3, size, size), input=[ov.PartialShape([-1, 3, size, size])]
    )
    # The INT8 engine's own compile path and config (f32 hint: without it OpenVINO silently runs BF16 on CPUs
    # that have it, and "FP32" would not be FP32), so the two differ in precision only.
    return ServingPlans(ov_model, {**COMPILE_CONFIG, "INFERENCE_NUM_THREADS": threads}, size)


def _onnx_sessions(
    checkpoint: Path, size: int, threads: int, calib: np.ndarray
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    tmp = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    fp32_path, pre_path, int8_path = tmp / "fp32.onnx", tmp / "pre.onnx", tmp / "int8.onnx"
    torch.onnx.export(
        model,
        torch.zeros(1, 3, size, size),
        fp32_path,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    # skip_symbolic_shape: symbolic shape inference crashes on the attention block (seen with ORT 1.2x).
    quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    quantize_static(
        str(pre_path),
        str(int8_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    out = {}
    for name, path in (("onnxruntime-fp32", fp32_path), ("onnxruntime-int8", int8_path)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out[name] = lambda x, s=session: s.run(None, {"x": x})[0]
    return out


def time_batches(
    fn: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, seconds: float, min_iters: int
) -> list[float]:
    """Milliseconds per call of ``fn(batch)``, after 3 untimed calls."""
    for _ in range(3):
        fn(batch)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_iters or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= 2000:
            break
    return times


def summarize(times: list[float], batch_size: int) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
        "images_per_s": batch_size * 1000 * len(times) / sum(times),
        "iterations": len(times),
    }


def _frame(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    side = max(width, height)
    img = synthetic.render("scratch", rng, side)[:height, :width]
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def decode_costs(input_size: int, iters: int = 200) -> list[dict[str, Any]]:
    """Decode + preprocess per frame on one core, full and reduced decode."""
    cv2.setNumThreads(1)
    rows = []
    for width, height in ((640, 480), (1280, 1024)):
        data = _frame(width, height, seed=width)
        for reduced in (False, True):
            min_side = input_size if reduced else None
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                preprocess_batch([decode_image(data, min_side=min_side)], input_size)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            rows.append(
                {
                    "frame": f"{width}x{height}",
                    "jpeg_kb": round(len(data) / 1024, 1),
                    "reduced_decode": reduced,
                    "p50_ms": statistics.median(times),
                    "p99_ms": times[int(0.99 * len(times))],
                }
            )
    cv2.setNumThreads(-1)
    return rows


def reduced_decode_effect(engine: Any, data: Path, run: Path, scale: int = 5) -> dict[str, Any]:
    """Prediction change from reduced decode on large frames: the run's test images upscaled x``scale`` and
    JPEG-encoded, classified after full and after reduced decode."""
    from models import data as ds

    split = ds.load_split(run / "split.json")["test"]
    records = ds.locate(split, data)
    labels = [engine.class_names.index(r.label) for r in records]
    full, fast = [], []
    for rec in records:
        img = cv2.imread(rec.path)
        big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        payload = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        full.append(decode_image(payload))
        fast.append(decode_image(payload, min_side=engine.input_size))
    p_full = engine.predict(preprocess_batch(full, engine.input_size, engine.mean, engine.std)).argmax(1)
    p_fast = engine.predict(preprocess_batch(fast, engine.input_size, engine.mean, engine.std)).argmax(1)
    y = np.asarray(labels)
    return {
        "images": len(records),
        "frame": f"{img.shape[1] * scale}x{img.shape[0] * scale}",
        "accuracy_full_decode": float((p_full == y).mean()),
        "accuracy_reduced_decode": float((p_fast == y).mean()),
        "top1_agreement": float((p_full == p_fast).mean()),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    is_artifact = args.model.is_dir()
    if is_artifact:
        meta = read_meta(args.model)
        checkpoint = args.model / CHECKPOINT_FILE
    else:
        from models.checkpoint import load_checkpoint

        checkpoint = args.model
        meta = load_checkpoint(checkpoint)[1]
    size = meta.input_size
    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(wanted) - set(ALL_ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; choose from {', '.join(ALL_ENGINES)}")
    skipped: dict[str, str] = {}
    cuda_ok, cuda_why = cuda_status()
    for name in wanted:
        if name.endswith("-cuda") and not cuda_ok:
            skipped[name] = cuda_why
        elif name == DEFAULT_ENGINE and not is_artifact:
            skipped[name] = "needs an artifact from `defectstream quantize`, not a checkpoint"
        elif name.split("-")[0] in ("openvino", "onnxruntime") and importlib.util.find_spec(name.split("-")[0]) is None:
            skipped[name] = f"{name.split('-')[0]} is not installed"
    wanted = [w for w in wanted if w not in skipped]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rng = np.random.default_rng(0)
    calib = np.stack(
        [
            preprocess_batch([cv2.cvtColor(synthetic.render("ok", rng, size), cv2.COLOR_BGR2RGB)], size)[0]
            for _ in range(32)
        ]
    )

    engines: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for name in ("torch-fp32", "torch-bf16"):
        if name in wanted:
            engines[name] = load_engine(checkpoint, kind=name, device="cpu").predict
    if args.compile:
        from models.engines.torch_engine import TorchEngine

        engines["torch-bf16-compiled"] = TorchEngine(checkpoint, device="cpu", precision="bf16", compile=True).predict
    if "openvino-fp32" in wanted:
        engines["openvino-fp32"] = _openvino_fp32(checkpoint, size, args.threads)
    if {"onnxruntime-fp32", "onnxruntime-int8"} & set(wanted):
        for name, fn in _onnx_sessions(checkpoint, size, args.threads, calib).items():
            if name in wanted:
                engines[name] = fn
    default_engine = (
        load_engine(args.model, kind=DEFAULT_ENGINE, threads=args.threads) if DEFAULT_ENGINE in wanted else None
    )
    if default_engine is not None:
        engines[DEFAULT_ENGINE] = default_engine.predict
    for name in CUDA_ENGINES:
        if name in wanted:
            # Includes the host->device copy and the probabilities coming back: what the worker pays per batch.
            engines[name] = load_engine(checkpoint, kind=name.removesuffix("-cuda"), device="cuda").predict

    rows = []
    for bs in batch_sizes:
        batch = np.ascontiguousarray(np.resize(calib, (bs, 3, size, size)))
        # Engines take turns, round after round, and each engine's times are pooled: on a shared machine a slow
        # spell then hits every engine alike instead of whichever one was being timed, which would skew the ratios.
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, fn in engines.items():
                times[name] += time_batches(fn, batch, args.seconds / args.rounds, -(-args.min_iters // args.rounds))
        for name in engines:
            result = summarize(times[name], bs)
            rows.append({"engine": name, "batch": bs, **result})
            print(
                f"  {name:22s} bs {bs:3d}  p50 {result['p50_ms']:8.2f} ms  p99 {result['p99_ms']:8.2f} ms  "
                f"{result['images_per_s']:7.1f} img/s",
                flush=True,
            )

    def row(engine: str, bs: int) -> dict[str, float] | None:
        return next((r for r in rows if r["engine"] == engine and r["batch"] == bs), None)

    ratios: dict[str, Any] = {}
    fp32_bs1 = [r for r in rows if r["engine"] in TRUE_FP32 and r["batch"] == 1]
    int8_bs1 = [r for r in rows if r["engine"] in INT8 and r["batch"] == 1]
    if fp32_bs1 and row(DEFAULT_ENGINE, 1) and row(DEFAULT_ENGINE, 8):
        fastest = min(fp32_bs1, key=lambda r: r["p50_ms"])["engine"]
        ratios["fastest_true_fp32"] = fastest
        ratios["int8_bs1_p50_over_fp32"] = row(DEFAULT_ENGINE, 1)["p50_ms"] / row(fastest, 1)["p50_ms"]
        if row(fastest, 8):
            ratios["int8_bs8_throughput_over_fp32"] = (
                row(DEFAULT_ENGINE, 8)["images_per_s"] / row(fastest, 8)["images_per_s"]
            )
    if int8_bs1 and row(DEFAULT_ENGINE, 1):
        best = min(int8_bs1, key=lambda r: r["p50_ms"])
        ratios["fastest_int8"] = best["engine"]
        ratios["default_int8_bs1_over_fastest_int8"] = row(DEFAULT_ENGINE, 1)["p50_ms"] / best["p50_ms"]

    decode = decode_costs(size)
    effect = (
        reduced_decode_effect(default_engine, args.data, args.run)
        if default_engine is not None and args.data and args.run
        else None
    )
    result = {
        "machine": machine_info(args.threads),
        "model": str(args.model),
        "model_version": meta.version,
        "backbone": meta.backbone,
        "input_size": size,
        "timing": {"seconds": args.seconds, "rounds": args.rounds, "min_iters": args.min_iters},
        "rows": rows,
        "skipped": skipped,
        "ratios": ratios,
        "decode": decode,
        "reduced_decode_effect": effect,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print_table(result)
    save_result(args.out, "model_bench", result)
    return result


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    gpu = f", GPU {m['cuda']} (CUDA {m['cuda_runtime']})" if m["cuda"] else ""
    print(
        f"\n{m['cpu']}, {m['threads']} threads{gpu}; {result['backbone']} + attention, {result['input_size']}px; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    )
    batch_sizes = sorted({r["batch"] for r in result["rows"]})
    engines = list(dict.fromkeys(r["engine"] for r in result["rows"]))
    header = "| engine | " + " | ".join(f"bs{b} p50 / p99 ms (img/s)" for b in batch_sizes) + " |"
    print(header)
    print("|---" * (len(batch_sizes) + 1) + "|")
    for name in engines:
        cells = []
        for b in batch_sizes:
            r = next(r for r in result["rows"] if r["engine"] == name and r["batch"] == b)
            cells.append(f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ({r['images_per_s']:.0f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    print("\nratios:", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result["ratios"].items()}))
    print("\n| frame | JPEG KB | reduced decode | decode+preprocess p50 ms (1 core) | p99 ms |")
    print("|---|---|---|---|---|")
    for d in result["decode"]:
        reduced = "yes" if d["reduced_decode"] else "no"
        print(f"| {d['frame']} | {d['jpeg_kb']} | {reduced} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} |")
    if result["reduced_decode_effect"]:
        print("\nreduced decode effect:", json.dumps(result["reduced_decode_effect"]))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
