"""Colocated engines: several worker processes on one machine, each with its own INT8 engine, inferring flat out at
the same time, with OpenVINO's thread pinning on (its default) and off (the engine's setting); frames/s side by side.
Then what pinning buys a process alone: single-frame latency at a line's pace (one frame every --gap-ms, the engine
idle in between), pinned and unpinned in alternating processes.

    python -m bench.colocated_engines --model ARTIFACT [--processes 2 --threads 1]

This is the layout of scale-out on one node: Kubernetes runs several worker pods per node, and without the static
CPU manager every pod may use every core. OpenVINO picks the cores to pin from the CPUs a process may use, so every
process picks the same ones. A single process with all the threads is measured too, for reference.

Prints a table and writes JSON (machine, versions, every number) to --out.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.model_bench import machine_info, save_result


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Engines in several processes at once, pinned and not", add_help=add_help)
    p.add_argument("--model", required=True, type=Path, help="INT8 artifact from `defectstream quantize`")
    p.add_argument("--processes", type=int, default=2, help="engine processes side by side (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="inference threads per process (default: 1)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default: 8)")
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per layout (default: 15)")
    p.add_argument("--frames", type=int, default=600, help="single frames timed per latency run (default: 600)")
    p.add_argument("--gap-ms", type=float, default=20.0, help="idle time between single frames (default: 20)")
    p.add_argument("--rounds", type=int, default=3, help="latency runs per pinning mode, alternating (default: 3)")
    p.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="JSON output folder (default: bench/results)"
    )
    return p


def _serve(artifact: Path, threads: int, pinning: bool, batch: int, seconds: float, start: Any, results: Any) -> None:
    """One process: load the engine, warm it, wait for the common start, infer for ``seconds``."""
    from models.engines.openvino_engine import OpenVINOEngine

    engine = OpenVINOEngine(artifact, threads=threads, verify=False, cpu_pinning=pinning)
    x = np.random.default_rng(0).random((batch, 3, engine.input_size, engine.input_size), dtype=np.float32)
    for _ in range(3):
        engine.predict(x)
    start.wait()
    frames, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine.predict(x)
        frames += batch
    results.put(frames / (time.perf_counter() - t0))


def _single_frames(artifact: Path, threads: int, pinning: bool, frames: int, gap_s: float, results: Any) -> None:
    """One process: batch-1 latency, one frame every ``gap_s`` (the worker's load at line rates)."""
    from models.engines.openvino_engine import OpenVINOEngine

    engine = OpenVINOEngine(artifact, threads=threads, verify=False, cpu_pinning=pinning)
    x = np.random.default_rng(0).random((1, 3, engine.input_size, engine.input_size), dtype=np.float32)
    for _ in range(20):
        engine.predict(x)
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        engine.predict(x)
        times.append((time.perf_counter() - t0) * 1000)
        time.sleep(gap_s)
    times.sort()
    results.put({"p50_ms": round(times[len(times) // 2], 2), "p99_ms": round(times[int(len(times) * 0.99)], 2)})


def run_single_frames(args: argparse.Namespace, threads: int, pinning: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(
        target=_single_frames, args=(args.model, threads, pinning, args.frames, args.gap_ms / 1000, results)
    )
    proc.start()
    latency = results.get(timeout=args.frames * (args.gap_ms / 1000 + 1) + 300)
    proc.join()
    return {"threads": threads, "cpu_pinning": pinning, **latency}


def run_layout(args: argparse.Namespace, processes: int, threads: int, pinning: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # no forked OpenVINO or torch state
    start, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_serve, args=(args.model, threads, pinning, args.batch, args.seconds, start, results))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    rates = [results.get(timeout=args.seconds + 300) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"an engine process exited with {proc.exitcode}")
    return {
        "processes": processes,
        "threads_each": threads,
        "cpu_pinning": pinning,
        "frames_per_s_each": [round(r, 1) for r in sorted(rates)],
        "frames_per_s_total": round(sum(rates), 1),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.processes < 1 or args.threads < 1:
        raise SystemExit("--processes and --threads must be at least 1")
    layouts = [(args.processes, args.threads), (1, args.processes * args.threads)]
    rows = [run_layout(args, n, t, pinning) for n, t in layouts for pinning in (True, False)]
    print(f"\n{'processes x threads':>20} {'pinning':>8} {'frames/s each':>22} {'total':>8}")
    for r in rows:
        each = ", ".join(f"{x:.0f}" for x in r["frames_per_s_each"])
        layout = f"{r['processes']} x {r['threads_each']}"
        print(f"{layout:>20} {'on' if r['cpu_pinning'] else 'off':>8} {each:>22} {r['frames_per_s_total']:>8.0f}")
    threads_alone = args.processes * args.threads
    latency = [run_single_frames(args, threads_alone, pinning) for _ in range(args.rounds) for pinning in (True, False)]
    print(f"\nsingle frames, one every {args.gap_ms:g} ms, {threads_alone} threads, {args.frames} per run:")
    print(f"{'pinning':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in latency:
        print(f"{'on' if r['cpu_pinning'] else 'off':>8} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    pinned, unpinned = rows[0]["frames_per_s_total"], rows[1]["frames_per_s_total"]
    result = {
        "machine": machine_info(args.threads),
        "model": str(args.model),
        "batch": args.batch,
        "seconds": args.seconds,
        "rows": rows,
        "single_frames": {"gap_ms": args.gap_ms, "frames": args.frames, "runs": latency},
        "colocated_unpinned_over_pinned": round(unpinned / pinned, 3),
    }
    print(f"\n{args.processes} processes side by side, frames/s pinning off / on: {unpinned / pinned:.2f}")
    save_result(args.out, "colocated_engines", result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
