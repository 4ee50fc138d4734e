"""What Faust itself costs per frame: the worker's consumer path with nothing inspected.

    python -m bench.faust_floor [--frames 20000] [--repeats 3] [--max-batch 8]

The e2e bench's synthetic 640x480 JPEG frames are written to a frames topic on the local broker (or the cluster in
KAFKA_BOOTSTRAP_SERVERS) with the camera gateway. Then, ``--repeats`` times, a child process runs a Faust app with
the worker's Kafka and consumer settings (``streams.worker.app.app_options`` and its Faust fixes) and one agent that
takes the frames the way the worker's does (``noack_take(max_batch, within=max_wait_s)``) and acks each one, and does
nothing else. Each child is a new consumer group, so each reads every frame from the start. From its first batch to
its last frame, the CPU time of each of its threads is read from /proc: the event loop, and the thread Faust runs its
Kafka consumer (aiokafka) in.

What it answers: the CPU per frame no worker built on Faust can go below on this machine, to set beside the bare
engine's CPU per frame (``bench.e2e_bench``). Frames are read from a backlog as fast as Faust takes them, so this is
the floor at full load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from bench.e2e_bench import make_frames, thread_cpu_seconds
from bench.model_bench import machine_info, save_result
from streams.camera import CameraGateway
from streams.kafka import topics
from streams.kafka.broker import kafka_cluster
from streams.kafka.topics import create_topics
from streams.settings import Settings

RESULT_PREFIX = "FAUST_FLOOR "  # the child's result line on stdout


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Faust's CPU per frame on the worker's consumer path", add_help=add_help)
    p.add_argument("--frames", type=int, default=20000, help="frames written, read by each repeat (default: 20000)")
    p.add_argument("--repeats", type=int, default=3, help="child processes, one after another (default: 3)")
    p.add_argument("--max-batch", type=int, default=8, help="frames per take, as the worker's (default: 8)")
    p.add_argument("--width", type=int, default=640, help="frame width (default: 640)")
    p.add_argument("--height", type=int, default=480, help="frame height (default: 480)")
    p.add_argument("--timeout-s", type=float, default=300.0, help="limit for one repeat (default: 300)")
    p.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="JSON output folder (default: bench/results)"
    )
    return p


def per_frame_ms(before: dict[int, float], after: dict[int, float], names: dict[int, str], frames: int) -> dict:
    """CPU-ms per frame by role: the event loop (MainThread), Faust's consumer thread (its other Python threads) and
    native threads."""
    by_role: Counter[str] = Counter()
    for tid, seconds in after.items():
        name = names.get(tid)
        role = "event loop" if name == "MainThread" else "native" if name is None else "consumer thread"
        by_role[role] += seconds - before.get(tid, 0.0)
    return {role: round(seconds * 1000 / frames, 4) for role, seconds in sorted(by_role.items())}


def serve(settings: Settings, frames: int, max_batch: int) -> None:
    """The child: a Faust app with the worker's consumer settings that takes and acks ``frames`` frames, prints its
    CPU per frame and exits."""
    import faust

    from streams.worker import faust_fixes
    from streams.worker.app import app_options

    faust_fixes.install()
    app = faust.App(settings.app_id, **app_options(settings.replace(max_batch=max_batch)), web_enabled=False)
    source = app.topic(settings.topic(topics.FRAMES), key_serializer="raw", value_serializer="raw")
    pid = os.getpid()
    state: dict[str, Any] = {"seen": 0}

    @app.agent(source, name="floor")
    async def take(stream: Any) -> None:
        async for events in stream.noack_take(max_batch, within=settings.max_wait_s):
            if not state["seen"]:
                state["start"], state["cpu"] = time.monotonic(), thread_cpu_seconds(pid)
            state["seen"] += len(events)
            for event in events:
                await stream.ack(event)
            if state["seen"] >= frames:
                cpu, wall = thread_cpu_seconds(pid), time.monotonic() - state["start"]
                names = {t.native_id: t.name for t in threading.enumerate()}
                row = {
                    "frames": state["seen"],
                    "frames_per_s": round(state["seen"] / wall, 1),
                    "cpu_ms_per_frame": per_frame_ms(state["cpu"], cpu, names, state["seen"]),
                }
                print(RESULT_PREFIX + json.dumps(row), flush=True)
                os._exit(0)  # measured; no need to wait for Faust's orderly stop

    worker = faust.Worker(app, loglevel="warn", workdir=str(settings.cache_dir))
    worker.execute_from_commandline()


def run_child(settings: Settings, frames: int, max_batch: int, timeout_s: float) -> dict[str, Any]:
    env = {**os.environ, **settings.to_env()}
    cmd = [sys.executable, "-m", "bench.faust_floor", "--serve", str(frames), "--max-batch", str(max_batch)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    for line in (done.stdout + done.stderr).splitlines():  # Faust's worker logs what its app prints
        if RESULT_PREFIX in line:
            return json.loads(line.split(RESULT_PREFIX, 1)[1])
    raise RuntimeError(f"the Faust child gave no result (exit {done.returncode}):\n{done.stderr[-3000:]}")


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.frames < args.max_batch:
        raise ValueError(f"--frames must be at least --max-batch ({args.max_batch}), got {args.frames}")
    base = Settings.from_env()
    run = uuid.uuid4().hex[:6]
    payloads = make_frames(args.width, args.height)
    rows = []
    with kafka_cluster(base) as cluster:
        settings = base.replace(kafka_bootstrap_servers=cluster.bootstrap, topic_prefix=f"floor-{run}")
        create_topics(settings)
        camera = CameraGateway(settings, camera_id="floor")
        stats = camera.run((("", f, "image/jpeg") for f in islice(cycle(payloads), args.frames)), fps=None)
        if stats.delivered != args.frames:
            raise RuntimeError(f"{args.frames} frames sent, {stats.delivered} delivered")
        for i in range(args.repeats):
            row = run_child(settings.replace(app_id=f"floor-{run}-{i}"), args.frames, args.max_batch, args.timeout_s)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "machine": machine_info(1),
        "frame": f"{args.width}x{args.height} JPEG q90 ({sum(len(f) for f in payloads) / len(payloads) / 1024:.0f} KB)",
        "max_batch": args.max_batch,
        "rows": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print_table(result)
    save_result(args.out, "faust_floor", result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"\nFaust take + ack, {result['frame']} frames, batches of {result['max_batch']}; CPU-ms per frame")
    print("| repeat | frames/s | event loop | consumer thread | native | total |")
    print("|---|---|---|---|---|---|")
    for i, row in enumerate(result["rows"], 1):
        ms = row["cpu_ms_per_frame"]
        print(
            f"| {i} | {row['frames_per_s']:.0f} | {ms.get('event loop', 0):.3f} | {ms.get('consumer thread', 0):.3f} "
            f"| {ms.get('native', 0):.3f} | {sum(ms.values()):.3f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        parser = argparse.ArgumentParser()
        parser.add_argument("--serve", type=int, required=True)
        parser.add_argument("--max-batch", type=int, required=True)
        child = parser.parse_args()
        sys.argv = [sys.argv[0], "worker"]  # Faust's command line: run the worker
        serve(Settings.from_env(), child.serve, child.max_batch)
    else:
        main(get_args_parser().parse_args())
