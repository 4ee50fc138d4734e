"""What an engine's first call at each batch size costs, against its later calls at that size, in a fresh process.

    python -m bench.first_calls --model ARTIFACT_OR_CHECKPOINT [--engine auto] [--device auto] [--max-batch 8]

Why: a worker's batches take whatever size the frames within ``max_wait_s`` make, so at line rates a size it has
not run yet can turn up long after start-up, and its first call lands in the latency tail. The worker therefore
runs every size once before it serves (``models.engines.warmup``); this measures what that spares. One batch at a
time, sizes in increasing order, each called ``--repeats`` more times after its first call (median counted), the
way the worker's warm-up calls them (once per engine stream).

Then the same sizes once each on a new thread: what a thread that has not met the engine yet pays even when another
thread has warmed it up (PyTorch keeps cuDNN's execution plans per thread; why the worker warms each inference
thread itself). Then, with every size warm, a single frame after the
engine sat idle for each of ``--idle-gaps`` seconds (``--repeats`` times each): what the first frame after a pause in
the line costs (on a GPU, with its SM clock as NVML reports it just before the call). Prints tables and writes JSON
to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.model_bench import machine_info, save_result
from models.engines import load_engine


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="First call per batch size vs later calls", add_help=add_help)
    p.add_argument("--model", required=True, type=Path, help="INT8 artifact or checkpoint")
    p.add_argument("--engine", default="auto", help="engine kind (default: auto)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p.add_argument("--threads", type=int, default=2, help="inference threads, CPU engines (default: 2)")
    p.add_argument("--streams", type=int, default=1, help="OpenVINO streams (default: 1)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch size (default: 8)")
    p.add_argument("--repeats", type=int, default=5, help="later calls per size, median counted (default: 5)")
    p.add_argument(
        "--idle-gaps",
        default="0,0.1,0.5,1,2,4",
        help="seconds idle before a single frame, comma-separated (default: 0,0.1,0.5,1,2,4)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="JSON output folder (default: bench/results)"
    )
    return p


def timed_ms(predict: Any, batch: np.ndarray) -> float:
    start = time.perf_counter()
    predict(batch)  # returns numpy: on CUDA the copy back waits for the GPU
    return (time.perf_counter() - start) * 1e3


def sm_clock_mhz(device: str) -> int | None:
    """The GPU's SM clock now (NVML, through torch), or None on CPU or without NVML."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        return int(torch.cuda.clock_rate())
    except Exception:  # no pynvml, or NVML refuses: the clock is a hint, not the measurement
        return None


def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    engine = load_engine(args.model, kind=args.engine, device=args.device, threads=args.threads, streams=args.streams)
    load_s = time.perf_counter() - started
    rows = []
    for size in range(1, args.max_batch + 1):
        batch = np.random.default_rng(size).random((size, 3, engine.input_size, engine.input_size), dtype=np.float32)
        first = [timed_ms(engine.predict, batch) for _ in range(max(1, engine.concurrent_batches))]
        later = statistics.median(timed_ms(engine.predict, batch) for _ in range(args.repeats))
        rows.append({"batch": size, "first_ms": first, "later_ms": later, "extra_ms": max(first) - later})
    on_new_thread: dict[int, float] = {}

    def sizes_again() -> None:
        for size in range(1, args.max_batch + 1):
            batch = np.zeros((size, 3, engine.input_size, engine.input_size), dtype=np.float32)
            on_new_thread[size] = timed_ms(engine.predict, batch)

    other = threading.Thread(target=sizes_again)
    other.start()
    other.join()
    for r in rows:
        r["new_thread_ms"] = on_new_thread[r["batch"]]
    single = np.random.default_rng(0).random((1, 3, engine.input_size, engine.input_size), dtype=np.float32)
    after_idle = []
    for gap in (float(g) for g in args.idle_gaps.split(",")):
        calls = []
        for _ in range(args.repeats):
            time.sleep(gap)
            clock = sm_clock_mhz(engine.device)
            calls.append({"ms": timed_ms(engine.predict, single), "sm_clock_mhz_before": clock})
        after_idle.append({"idle_s": gap, "calls": calls})
    result = {
        "machine": machine_info(args.threads),
        "model": str(args.model),
        "engine": engine.name,
        "device": engine.device,
        "concurrent_batches": engine.concurrent_batches,
        "load_s": round(load_s, 2),
        "rows": rows,
        "after_idle": after_idle,
    }
    print(f"{engine.name} on {engine.device}, {engine.concurrent_batches} stream(s), loaded in {load_s:.1f} s")
    print("| batch | first call(s), ms | later, median ms | extra, ms | first on a new thread, ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        firsts = " / ".join(f"{ms:.1f}" for ms in r["first_ms"])
        print(f"| {r['batch']} | {firsts} | {r['later_ms']:.1f} | {r['extra_ms']:.1f} | {r['new_thread_ms']:.1f} |")
    print("\n| idle before the frame, s | batch-1 call, ms (each) | SM clock before, MHz |")
    print("|---|---|---|")
    for r in after_idle:
        each = " / ".join(f"{c['ms']:.1f}" for c in r["calls"])
        clocks = " / ".join(str(c["sm_clock_mhz_before"]) for c in r["calls"])
        print(f"| {r['idle_s']:g} | {each} | {clocks} |")
    save_result(args.out, "first_calls", result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
