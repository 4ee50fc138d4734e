"""Colocated engines: several worker processes on one machine, each with its own INT8 engine, inferring flat out at
the same time, with OpenVINO's thread pinning on (its default) and off (the engine's setting); frames/s side by side.
Then what pinning buys a process alone: single-frame latency at a line's pace (the engine idle --gap-ms between
frames), pinned and unpinned in alternating processes. Each process reports the cores its threads were held to.

    python -m bench.colocated_engines --model ARTIFACT [--processes 2 --threads 1]

This is the layout of scale-out on one node: Kubernetes runs several worker pods per node, and without the static
CPU manager every pod may use every core. OpenVINO picks the cores to pin from the CPUs a process may use, so every
process picks the same ones. A single process with all the threads is measured too, for reference.

Prints a table and writes JSON (machine, versions, every number) to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import queue
import time
from pathlib import Path
from typing import Any

import numpy as np


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


# A child that has not reported this long after its peers or its own timed part is taken as stuck.
STARTUP_TIMEOUT_S = 300.0


def _engine_report(engine: Any) -> dict[str, Any]:
    """What the child really ran: OpenVINO's pinning setting and the cores its threads were held to (if any)."""
    allowed = os.sched_getaffinity(0)
    held_to: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            cpus = os.sched_getaffinity(int(tid))
            if cpus < allowed:
                held_to |= cpus
    return {"runtime_cpu_pinning": engine.runtime_property("ENABLE_CPU_PINNING"), "threads_held_to": sorted(held_to)}


def _serve(artifact: Path, threads: int, pinning: bool, batch: int, seconds: float, start: Any, results: Any) -> None:
    """One process: load the engine, warm it, wait for the common start, infer for ``seconds``."""
    from models.engines.openvino_engine import OpenVINOEngine

    engine = OpenVINOEngine(artifact, threads=threads, verify=False, cpu_pinning=pinning)
    x = np.random.default_rng(0).random((batch, 3, engine.input_size, engine.input_size), dtype=np.float32)
    for _ in range(3):
        engine.predict(x)
    start.wait(timeout=STARTUP_TIMEOUT_S)  # raises BrokenBarrierError if a peer never gets here
    frames, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine.predict(x)
        frames += batch
    results.put({"frames_per_s": frames / (time.perf_counter() - t0), **_engine_report(engine)})


def _single_frames(artifact: Path, threads: int, pinning: bool, frames: int, gap_s: float, results: Any) -> None:
    """One process: batch-1 latency with the engine idle ``gap_s`` between frames (the worker at line rates)."""
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
    results.put(
        {"p50_ms": round(nearest_rank(times, 0.50), 2), "p99_ms": round(nearest_rank(times, 0.99), 2)}
        | _engine_report(engine)
    )


def nearest_rank(values: list[float], q: float) -> float:
    """The smallest value with at least ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _run_children(target: Any, args_of: list[tuple], timeout_s: float) -> list[dict[str, Any]]:
    """Start one spawned child per argument tuple (each gets a result queue last) and collect one report from each.
    A child that dies or hangs fails the run at once; no child outlives it."""
    ctx = mp.get_context("spawn")  # no forked OpenVINO state
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, results), daemon=True) for a in args_of]
    for proc in procs:
        proc.start()
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(reports) < len(procs):
            try:
                reports.append(results.get(timeout=1.0))
            except queue.Empty:
                failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if failed:
                    raise RuntimeError(f"an engine process exited with {failed[0]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"engine processes did not report within {timeout_s:.0f} s") from None
        for proc in procs:
            proc.join(timeout=30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join()
    return reports


def run_layout(args: argparse.Namespace, processes: int, threads: int, pinning: bool) -> dict[str, Any]:
    start = mp.get_context("spawn").Barrier(processes)
    reports = _run_children(
        _serve,
        [(args.model, threads, pinning, args.batch, args.seconds, start)] * processes,
        timeout_s=STARTUP_TIMEOUT_S + args.seconds + 60,
    )
    reports.sort(key=lambda r: r["frames_per_s"])
    return {
        "processes": processes,
        "threads_each": threads,
        "cpu_pinning": pinning,
        "frames_per_s_each": [round(r["frames_per_s"], 1) for r in reports],
        "frames_per_s_total": round(sum(r["frames_per_s"] for r in reports), 1),
        "runtime_cpu_pinning_each": [r["runtime_cpu_pinning"] for r in reports],
        "threads_held_to_each": [r["threads_held_to"] for r in reports],
    }


def run_single_frames(args: argparse.Namespace, threads: int, pinning: bool) -> dict[str, Any]:
    (report,) = _run_children(
        _single_frames,
        [(args.model, threads, pinning, args.frames, args.gap_ms / 1000)],
        timeout_s=STARTUP_TIMEOUT_S + args.frames * (args.gap_ms / 1000 + 1),
    )
    return {"threads": threads, "cpu_pinning": pinning, **report}


def main(args: argparse.Namespace) -> dict[str, Any]:
    # Imported here, not at the top: every spawned child imports this module, and needs neither torch nor cv2.
    from bench.model_bench import machine_info, save_result

    for name in ("processes", "threads", "batch", "frames", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    if args.seconds <= 0 or args.gap_ms < 0:
        raise SystemExit("--seconds must be above 0 and --gap-ms at least 0")
    layouts = [(args.processes, args.threads), (1, args.processes * args.threads)]
    rows = [run_layout(args, n, t, pinning) for n, t in layouts for pinning in (True, False)]
    print(f"\n{'processes x threads':>20} {'pinning':>8} {'frames/s each':>22} {'total':>8} {'threads held to':>16}")
    for r in rows:
        each = ", ".join(f"{x:.0f}" for x in r["frames_per_s_each"])
        layout = f"{r['processes']} x {r['threads_each']}"
        held = "; ".join(",".join(map(str, cpus)) or "-" for cpus in r["threads_held_to_each"])
        print(
            f"{layout:>20} {'on' if r['cpu_pinning'] else 'off':>8} {each:>22} {r['frames_per_s_total']:>8.0f}"
            f" {held:>16}"
        )
    threads_alone = args.processes * args.threads
    latency = [run_single_frames(args, threads_alone, pinning) for _ in range(args.rounds) for pinning in (True, False)]
    print(f"\nsingle frames, one every {args.gap_ms:g} ms, {threads_alone} threads, {args.frames} per run:")
    print(f"{'pinning':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in latency:
        print(f"{'on' if r['cpu_pinning'] else 'off':>8} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    pinned, unpinned = rows[0]["frames_per_s_total"], rows[1]["frames_per_s_total"]
    result = {
        "machine": machine_info(args.processes * args.threads),
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
