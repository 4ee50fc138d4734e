"""The worker's inspection stages without Kafka: how many frames a worker of this engine, on this machine, can inspect.

    python -m bench.worker_stages --model MODEL [--batches 8,32] [--decode-threads 1,2,4] [--seconds 5]

Runs exactly the worker's code (streams.worker.stages.InspectionStages around streams.inspection.FrameInspector:
header checks, decode, preprocess, inference, verdicts and encoded records) on synthetic 640x480 JPEG parts, with
enough batches in flight to keep every stage thread busy (``--in-flight``; a worker needs its
DEFECTSTREAM_MAX_BATCHES_IN_FLIGHT as high to match). For each batch size and number of decode threads: frames/s
over the wall clock, CPU per frame, and how busy the decode and inference stages were. Every frame must come back as
exactly one inspection result; anything else fails the run.

``--compare-cpu``: the same frames also through torch FP32 on the CPU from the same checkpoint, and the share of
frames whose class is the same (a check of a GPU or INT8 engine through the worker's own decode path).
This is the benchmark for a GPU worker (no Kafka broker is needed; e2e_bench.py times the whole pipeline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from itertools import cycle
from pathlib import Path
from typing import Any

from bench.e2e_bench import make_frames
from bench.model_bench import machine_info, save_result
from models.engines import load_engine
from models.engines.artifact import CHECKPOINT_FILE
from models.engines.base import InferenceEngine
from schemas import frame as frame_schema
from schemas.frame import FrameMeta
from schemas.records import InspectionResult
from streams.inspection import FrameInspector, IncomingFrame
from streams.kafka import topics
from streams.settings import Settings
from streams.worker.stages import InspectionStages


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="The worker's inspection stages without Kafka", add_help=add_help)
    p.add_argument("--model", required=True, type=Path, help="artifact directory or checkpoint the worker serves")
    p.add_argument("--engine", default="auto", help="engine kind (default: auto, as the worker picks it)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="inference threads (default: all)")
    p.add_argument(
        "--streams", type=int, default=Settings().inference_streams, help="OpenVINO streams (default: the worker's)"
    )
    p.add_argument("--batches", default="8", help="batch sizes, comma-separated (default: 8)")
    p.add_argument("--decode-threads", default="1", help="decode thread counts, comma-separated (default: 1)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per layout (default: 5)")
    p.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="batches in flight (default: two per stage thread, the worker's rule; a worker needs "
        "max_batches_in_flight as high)",
    )
    p.add_argument("--compare-cpu", action="store_true", help="also check classes against torch FP32 on the CPU")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="JSON folder (default: bench/results)")
    return p


def incoming(payloads: list[bytes], count: int, first: int = 0) -> list[IncomingFrame]:
    """``count`` frames with the headers a camera gateway sends, cycling through ``payloads``."""
    now = time.time_ns()
    frames = []
    for i, value in zip(range(first, first + count), cycle(payloads), strict=False):
        meta = FrameMeta(part_id=f"bench-{i}", line_id="line-1", camera_id="cam-1", capture_ts_ns=now)
        headers = frame_schema.headers_to_dict(meta.to_headers())
        frames.append(IncomingFrame(value, headers, "frames", 0, i, received_ts_ns=now))
    return frames


def inspector_for(engine: InferenceEngine) -> FrameInspector:
    """The worker's inspector for ``engine``, sampling no retraining frames (each would carry its image)."""
    settings = Settings(
        ok_class=engine.class_names[0],
        retrain_reviews=False,
        retrain_low_confidence_below=0.0,
        retrain_audit_rate=0.0,
        line_travel_ms="600000",  # frames are stamped once, before the first layout; no bench frame is late
    )
    return FrameInspector.from_settings(engine, settings)


def results_of(outgoing: list, expected: int) -> list[InspectionResult]:
    results = [InspectionResult.from_json(o.value) for o in outgoing if o.role == topics.RESULTS]
    others = {o.role for o in outgoing} - {topics.RESULTS, topics.REJECT_COMMANDS}
    if len(results) != expected or others:
        raise RuntimeError(f"{expected} frames gave {len(results)} results and records for {sorted(others)}")
    return results


async def time_layout(
    stages: InspectionStages, payloads: list[bytes], batch: int, seconds: float, in_flight: int | None = None
) -> dict[str, Any]:
    """``in_flight`` batches at once (default: ``stages.batches_to_keep_busy``, two per stage thread). The worker
    keeps at most DEFECTSTREAM_MAX_BATCHES_IN_FLIGHT: to get these rates it needs as many."""
    in_flight = in_flight or stages.batches_to_keep_busy
    sent = done = 0
    decode_s = infer_s = 0.0
    latencies: list[float] = []

    async def one() -> None:
        nonlocal sent, done, decode_s, infer_s
        frames = incoming(payloads, batch, sent)
        sent += batch
        t0 = time.perf_counter()
        outgoing, _ = await stages.run(frames)
        latencies.append(time.perf_counter() - t0)
        results = results_of(outgoing, batch)
        decode_s += results[0].timings_ms["decode"] * batch / 1000
        infer_s += results[0].timings_ms["inference"] / 1000
        done += batch

    for _ in range(3):  # kernels, allocators, cuDNN's algorithm choice
        await one()
    sent = done = 0
    decode_s = infer_s = 0.0
    latencies.clear()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + seconds

    async def lane() -> None:
        while time.perf_counter() < deadline:
            await one()

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "batch": batch,
        "threads": dict(stages.threads),
        "in_flight": in_flight,
        "frames": done,
        "frames_per_s": done / wall,
        "cpu_ms_per_frame": cpu * 1000 / done,
        "batch_p50_ms": statistics.median(latencies) * 1000,
        # Stage time summed over the batches, over the wall clock: 1.0 = one thread of the stage always busy.
        "decode_busy": decode_s / wall,
        "inference_busy": infer_s / wall,
    }


async def agreement(engine: InferenceEngine, reference: InferenceEngine, payloads: list[bytes]) -> dict[str, Any]:
    """Classes of the same frames through both engines, each behind the worker's own stages."""
    frames = incoming(payloads, len(payloads))
    classes = []
    for e in (engine, reference):
        stages = InspectionStages(inspector_for(e))
        outgoing, _ = await stages.run(frames)
        stages.shutdown()
        classes.append([r.label for r in results_of(outgoing, len(frames))])
    same = sum(a == b for a, b in zip(*classes, strict=True))
    return {"frames": len(frames), "same_class": same, "agreement": same / len(frames), "reference": reference.name}


def main(args: argparse.Namespace) -> dict[str, Any]:
    payloads = make_frames(640, 480)
    engine = load_engine(args.model, kind=args.engine, device=args.device, threads=args.threads, streams=args.streams)
    print(f"{engine.name} on {engine.device}, {engine.concurrent_batches} batch(es) at once", flush=True)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for decode_threads in [int(d) for d in args.decode_threads.split(",")]:
            stages = InspectionStages(inspector_for(engine), decode_threads=decode_threads)
            row = asyncio.run(time_layout(stages, payloads, batch, args.seconds, args.in_flight))
            stages.shutdown()
            rows.append(row)
            print(json.dumps(row), flush=True)
    result: dict[str, Any] = {
        "machine": machine_info(args.threads),
        "model": str(args.model),
        "engine": engine.name,
        "device": engine.device,
        "frame": "640x480 JPEG q90, synthetic parts",
        "layouts": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.compare_cpu:
        checkpoint = args.model / CHECKPOINT_FILE if args.model.is_dir() else args.model
        reference = load_engine(checkpoint, kind="torch-fp32", device="cpu")
        result["agreement_with_cpu_fp32"] = asyncio.run(agreement(engine, reference, payloads))
        print(json.dumps(result["agreement_with_cpu_fp32"]), flush=True)
    print_table(result)
    save_result(args.out, "worker_stages", result)
    return result


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    where = f"{m['cuda'] or m['cpu']}, {m['usable_cpus']} of {m['logical_cpus']} CPUs usable"
    print(f"\n{result['engine']} on {result['device']} ({where}); {result['frame']}")
    print(
        "| batch | decode threads | inference threads | frames/s | CPU ms/frame | batch p50 ms | decode busy "
        "| inference busy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in result["layouts"]:
        t = r["threads"]
        print(
            f"| {r['batch']} | {t['decode']} | {t['infer']} | {r['frames_per_s']:.0f} | {r['cpu_ms_per_frame']:.2f} | "
            f"{r['batch_p50_ms']:.1f} | {r['decode_busy']:.2f} | {r['inference_busy']:.2f} |"
        )
    if "agreement_with_cpu_fp32" in result:
        a = result["agreement_with_cpu_fp32"]
        print(f"\nsame class as {a['reference']} on the CPU: {a['same_class']} of {a['frames']} frames")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
