"""INT8 engine throughput with one OpenVINO stream vs several, alone and while another process takes CPU time.

    python -m bench.stream_contention --model ARTIFACT [--streams 1,2] [--load 0,0.3,0.5] [--seconds 5]

Why: on a worker's machine the engine never has the cores to itself (the event loop, the decode thread, on a small
line the Kafka broker). With one stream every layer is split over all threads, which then wait for each other, so
a thread that loses its core holds up the rest. With one stream per thread each batch runs on one thread and
nothing waits. ``--load L``: a second process busy for L of every 10 ms on one core (L x 100% of a core), as a
stand-in for such neighbours. Each stream count runs as many predict calls at once as it has streams (the worker's
inference threads do the same), on pre-decoded batches: inference alone, no decode.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.model_bench import machine_info, save_result
from models.engines.openvino_engine import OpenVINOEngine


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="OpenVINO streams under CPU contention", add_help=add_help)
    p.add_argument("--model", required=True, type=Path, help="INT8 artifact directory")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="inference threads (default: all)")
    p.add_argument("--streams", default="1,2", help="stream counts to compare (default: 1,2)")
    p.add_argument("--load", default="0,0.3,0.5", help="busy share of the neighbour's core (default: 0,0.3,0.5)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default: 8)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per case (default: 5)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="JSON folder (default: bench/results)")
    return p


def neighbour(busy: float, stop: Any) -> None:
    """Busy for ``busy`` of every 10 ms, asleep for the rest."""
    while not stop.is_set():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < busy * 0.010:
            pass
        time.sleep((1 - busy) * 0.010)


def throughput(engine: OpenVINOEngine, batch: int, seconds: float) -> dict[str, float]:
    x = np.random.default_rng(0).random((batch, 3, engine.input_size, engine.input_size), dtype=np.float32)
    for _ in range(2 * engine.concurrent_batches):
        engine.predict(x)
    latencies: list[float] = []  # list.append is atomic: the callers share it
    deadline = time.perf_counter() + seconds

    def caller() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            engine.predict(x)
            latencies.append(time.perf_counter() - t0)

    callers = [threading.Thread(target=caller) for _ in range(engine.concurrent_batches)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    frames = batch * len(latencies)
    return {
        "frames_per_s": frames / wall,
        "batch_p50_ms": statistics.median(latencies) * 1000,
        "cpu_ms_per_frame": cpu * 1000 / frames,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    engines = {
        s: OpenVINOEngine(args.model, threads=args.threads, verify=False, streams=s)
        for s in (int(v) for v in args.streams.split(","))
    }
    rows = []
    for load in (float(v) for v in args.load.split(",")):
        for streams, engine in engines.items():  # alternating, so a change in the machine hits both alike
            stop = mp.Event()
            other = mp.Process(target=neighbour, args=(load, stop), daemon=True) if load > 0 else None
            if other is not None:
                other.start()
            try:
                row = {"load": load, "streams": streams, **throughput(engine, args.batch, args.seconds)}
            finally:
                stop.set()
                if other is not None:
                    other.join()
            rows.append(row)
            print(row, flush=True)
    result = {
        "machine": machine_info(args.threads),
        "model": str(args.model),
        "batch": args.batch,
        "rows": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print_table(result)
    save_result(args.out, "stream_contention", result)
    return result


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\n{m['cpu']}, {m['threads']} inference threads, batch {result['batch']}")
    print("| neighbour load | streams | frames/s | vs alone | batch p50 ms | CPU ms/frame |")
    print("|---|---|---|---|---|---|")
    alone = {r["streams"]: r["frames_per_s"] for r in result["rows"] if r["load"] == 0}
    for r in result["rows"]:
        share = f"{r['frames_per_s'] / alone[r['streams']]:.2f}" if r["streams"] in alone else "-"
        print(
            f"| {r['load']:.0%} of a core | {r['streams']} | {r['frames_per_s']:.0f} | {share} | "
            f"{r['batch_p50_ms']:.1f} | {r['cpu_ms_per_frame']:.2f} |"
        )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
