"""End-to-end benchmark: camera -> Kafka -> worker -> gate on the local broker.

    python -m bench.e2e_bench --model ARTIFACT [--rates 20,40] [--seconds 20] [--bursts 3] [--budget-ms 200]
        [--worker-cores 0] [--decode-threads 1] [--workers 1]

First an untimed warm-up (bursts of ``--warmup-chunk`` frames): the worker's first batches and a fresh broker JVM are
slower than a running line's, and the broker is started fresh for each benchmark. The warm-up goes on until the
broker's JIT compilers have settled (see :func:`warm_up`), between ``--warmup-frames`` and ``--warmup-max-frames``.
Each timed round starts once the worker, the broker and the bench are idle (``settle``: what a burst leaves behind
is not the next round's latency).
For each fixed frame rate: capture-to-gate latency p50/p95/p99 over every frame and the deadline misses at
``--budget-ms``. Then the maximum sustained rate: a burst sent as fast as the camera can, measured as completed
verdicts per second once the pipeline is saturated, ``--bursts`` times (the median counts: one burst lasts a few
seconds, and a shared machine's neighbours move a single one by 10% and more). Beside it, in the same run and with
the same threads, the bare throughput of the worker's engine at its batch size and streams (decode + preprocess +
predict, no Kafka), two ways: one loop per engine stream that decodes then predicts, and the worker's own stages
without Kafka (a decode thread feeding one inference thread per stream). The second is the like-for-like reference
for a worker that overlaps the two. The bare engine is measured before each burst and after the last one, with the
broker and the worker up and idle, and each burst is compared with the mean of the two measurements beside it: a
shared machine's speed changes within minutes, so a reference taken minutes away (before the broker started, after
it stopped) compares a burst with another machine. The CPU the idle broker and worker used during a bare
measurement is given back to it in proportion (``given_back``), so that they cannot flatter the ratio. The ratio
that counts is the median of the bursts' ratios.

Every frame reaches the gate: the worker runs with ``decision_thresholds=1.0``, so every verdict is a ``review``
and sends a command (the decision policy costs nothing measurable; the point is to time every frame to the gate).
No frame becomes a retraining sample (``retrain_reviews=False``, no low-confidence or audit sampling): on a line
only a small share of frames are reviews, and a sample per frame would send every image back to Kafka.
Frames are synthetic parts rendered at 640x480 and JPEG-encoded at quality 90, sent with the camera gateway.

By default the worker, the broker and the bench's camera, gate and reader share every core, as on a one-box line.
``--worker-cores`` gives the worker (and the bare engine it is compared with) cores of their own and puts the broker
and the bench on the others: the worker's own overhead over the bare engine, as on a plant where Kafka runs
elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.model_bench import machine_info, save_result
from models import synthetic
from models.engines import load_engine
from models.preprocess import decode_image, preprocess_batch
from schemas.records import InspectionResult, RejectCommand
from streams.camera import CameraGateway
from streams.gate import RejectGate
from streams.kafka import topics
from streams.kafka.broker import free_port, kafka_cluster
from streams.kafka.reader import TopicReader
from streams.kafka.topics import create_topics
from streams.quantiles import nearest_rank
from streams.settings import Settings
from streams.shutdown import interrupt, on_sigterm
from streams.worker.process import WorkerProcess


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="End-to-end latency and throughput on the local broker", add_help=add_help)
    p.add_argument("--model", required=True, type=Path, help="INT8 artifact (or checkpoint) the worker serves")
    p.add_argument("--engine", default="auto", help="worker engine (default: auto = INT8 for an artifact on CPU)")
    p.add_argument("--rates", default="20", help="fixed frame rates to test, frames/s (default: 20)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per fixed rate (default: 20)")
    p.add_argument("--burst", type=int, default=1500, help="frames in the max-rate burst (default: 1500)")
    p.add_argument("--bursts", type=int, default=3, help="max-rate bursts; the median burst's rate counts (default: 3)")
    p.add_argument(
        "--warmup-frames",
        type=int,
        default=6000,
        help="at least this many frames sent as fast as possible before anything is timed (default: 6000)",
    )
    p.add_argument(
        "--warmup-max-frames",
        type=int,
        default=45000,
        help="at most this many warm-up frames, settled or not (default: 45000)",
    )
    p.add_argument(
        "--warmup-chunk",
        type=int,
        default=3000,
        help="warm-up frames per burst; the broker's JIT share is checked after each (default: 3000)",
    )
    p.add_argument("--budget-ms", type=float, default=200.0, help="capture-to-gate deadline budget (default: 200)")
    p.add_argument("--width", type=int, default=640, help="frame width (default: 640)")
    p.add_argument("--height", type=int, default=480, help="frame height (default: 480)")
    p.add_argument("--max-batch", type=int, default=8, help="worker batch size (default: 8)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="worker inference threads (default: one per core it may use: all, or --worker-cores)",
    )
    p.add_argument(
        "--worker-cores",
        default="",
        help="CPU ids for the worker and the bare engine, e.g. '0'; the broker and the bench's camera, gate and reader "
        "run on the other cores (default: none; everything shares every core, as on a one-box line)",
    )
    p.add_argument(
        "--streams",
        type=int,
        default=Settings().inference_streams,
        help=f"batches the worker's engine infers at once (default: {Settings().inference_streams}, the worker's)",
    )
    p.add_argument(
        "--decode-threads",
        type=int,
        default=Settings().decode_threads,
        help=f"threads that decode frames in the worker and in the overlapped bare engine (default: "
        f"{Settings().decode_threads}, the worker's; more on a GPU, where one cannot keep the GPU busy)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes in the one consumer group (default: 1); on a GPU machine, where one worker's event "
        "loop is the limit, several share the GPU. The overlapped bare engine decodes with as many decode threads as "
        "all of them together",
    )
    p.add_argument(
        "--out", type=Path, default=Path("bench/results"), help="JSON output folder (default: bench/results)"
    )
    return p


def make_frames(width: int, height: int, count: int = 64, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    side = max(width, height)
    frames = []
    for i in range(count):
        img = synthetic.render(synthetic.CLASSES[i % len(synthetic.CLASSES)], rng, side)[:height, :width]
        frames.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return frames


def parse_cores(spec: str) -> set[int]:
    """``"0,2-3"`` -> {0, 2, 3}; empty -> no pinning. Refuses cores this process may not use, and taking them all
    (the broker and the bench need at least one other)."""
    cores: set[int] = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    allowed = os.sched_getaffinity(0)
    if not cores <= allowed:
        raise ValueError(
            f"--worker-cores {spec!r}: cores {sorted(cores - allowed)} not available (have {sorted(allowed)})"
        )
    if cores and cores == allowed:
        raise ValueError(f"--worker-cores {spec!r} leaves no core for the broker and the bench")
    return cores


@contextlib.contextmanager
def on_cores(cores: set[int]) -> Iterator[None]:
    """Run the calling thread on ``cores`` (nothing changes for an empty set). Threads and processes it starts
    meanwhile inherit them: that is how the bare engine, the worker and the broker are placed."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)  # pid 0: the calling thread only
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def bare_throughput(
    model: Path,
    engine_kind: str,
    threads: int,
    batch: int,
    frames: list[bytes],
    overlap_decode: bool = False,
    streams: int = 1,
    decode_threads: int = 1,
    seconds: float = 5.0,
) -> dict[str, Any]:
    """Decode + preprocess + predict of ``batch`` frames, no Kafka: what the worker could do at best.

    ``overlap_decode=False``: loops that decode then predict, one per batch the engine infers at once (its
    ``concurrent_batches``, from ``streams``). ``True``: the worker's stages without Kafka, ``decode_threads`` decode
    threads feeding as many inference threads (same engine, same threads, same streams). Frames per second over the
    wall clock."""
    engine = load_engine(model, kind=engine_kind, threads=threads, streams=streams)
    payloads = list(islice(cycle(frames), batch))
    lanes = engine.concurrent_batches

    def decode() -> np.ndarray:
        images = [decode_image(p, min_side=engine.input_size) for p in payloads]
        return preprocess_batch(images, engine.input_size, engine.mean, engine.std)

    for _ in range(3):
        engine.predict(decode())
    decoded: queue.Queue[np.ndarray] = queue.Queue(maxsize=lanes + decode_threads)
    stop = threading.Event()
    times: list[float] = []  # list.append is atomic: the lanes share it

    def decoder() -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):  # look at the stop flag now and then
                decoded.put(decode(), timeout=0.1)

    def lane(deadline: float) -> None:
        while time.perf_counter() < deadline or len(times) < 10:
            t0 = time.perf_counter()
            engine.predict(decoded.get() if overlap_decode else decode())
            times.append(time.perf_counter() - t0)

    feeders = [threading.Thread(target=decoder, daemon=True) for _ in range(decode_threads if overlap_decode else 0)]
    for feeder in feeders:
        feeder.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    workers = [threading.Thread(target=lane, args=(wall0 + seconds,)) for _ in range(lanes)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stop.set()
    for feeder in feeders:
        feeder.join()
    return {
        "engine": engine.name,
        "batch": batch,
        "overlap_decode": overlap_decode,
        **({"decode_threads": decode_threads} if overlap_decode else {}),
        "concurrent_batches": lanes,
        "batch_p50_ms": statistics.median(times) * 1000,
        "frames_per_s": batch * len(times) / wall,
        "cpu_ms_per_frame": cpu * 1000 / (batch * len(times)),
    }


SLOWEST_FRAMES = 5  # per round, in the JSON
# What each bare-engine measurement measured (the rest, engine and batch, is the same in every one).
MEASURED = ("frames_per_s", "cpu_ms_per_frame", "batch_p50_ms", "cores_busy")
# The two bare references: one loop that decodes then predicts, and the worker's stages overlapped without Kafka.
BARE_KINDS = ("one_loop", "overlapped")


def pair_bursts_with_bare(bursts: list[dict[str, Any]], slots: list[dict[str, Any]]) -> None:
    """Burst i ran between bare slots i and i+1: its reference is the mean of those two, per kind, each rate with
    the cores the idle pipeline took from it given back (``given_back``), and its ratio its sustained rate over
    that. CPU per frame is averaged too, for ``cpu_ceiling``. Written into each burst as ``bare_beside`` and
    ``ratio``."""
    if len(slots) != len(bursts) + 1:
        raise ValueError(f"{len(bursts)} bursts need {len(bursts) + 1} bare measurements around them, not {len(slots)}")
    for burst, before, after in zip(bursts, slots[:-1], slots[1:], strict=True):
        burst["bare_beside"] = {
            kind: {
                "frames_per_s": sum(s[kind]["frames_per_s"] * s["given_back"] for s in (before, after)) / 2,
                "cpu_ms_per_frame": (before[kind]["cpu_ms_per_frame"] + after[kind]["cpu_ms_per_frame"]) / 2,
            }
            for kind in BARE_KINDS
        }
        burst["ratio"] = {
            kind: burst["sustained_fps"] / burst["bare_beside"][kind]["frames_per_s"] for kind in BARE_KINDS
        }


def lower_median(values: list[float]) -> float:
    """The median of an odd count, the lower middle value of an even one: never the better of two."""
    if not values:
        raise ValueError("no value to take the median of")
    return sorted(values)[(len(values) - 1) // 2]


def bare_summary(slots: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """One reference over a run's slots, for the table and the JSON: rates and CPU per frame averaged, and what is
    the same in every slot (engine, batch, threads)."""
    first = slots[0][kind]
    return {
        **{k: v for k, v in first.items() if k not in MEASURED},
        "frames_per_s": statistics.fmean(s[kind]["frames_per_s"] for s in slots),
        "cpu_ms_per_frame": statistics.fmean(s[kind]["cpu_ms_per_frame"] for s in slots),
        "range_frames_per_s": [
            min(s[kind]["frames_per_s"] for s in slots),
            max(s[kind]["frames_per_s"] for s in slots),
        ],
    }


def median_burst(bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """The burst with the median sustained rate (the lower middle one of an even count): the max-rate figure."""
    if not bursts:
        raise ValueError("no burst was measured")
    ranked = sorted(bursts, key=lambda b: b["sustained_fps"])
    return ranked[(len(ranked) - 1) // 2]


def cpu_ceiling(bare: dict[str, Any], burst: dict[str, Any], cores: int) -> dict[str, float] | None:
    """The highest rate these cores could carry, from the CPU the burst actually cost per frame: what the
    sustained rate is up against on a machine where broker, camera and gate share the worker's cores. Also the
    same with a worker that cost no more per frame than the bare engine loop (zero pipeline overhead)."""
    cpu = burst.get("cpu_s") or {}
    if "worker" not in cpu or not burst["frames"]:
        return None
    per_frame = {name: seconds * 1000 / burst["frames"] for name, seconds in cpu.items()}
    total = sum(per_frame.values())
    ideal = total - per_frame["worker"] + bare["cpu_ms_per_frame"]
    return {
        "cpu_ms_per_frame": total,
        "frames_per_s": cores * 1000 / total,
        "over_bare": cores * 1000 / total / bare["frames_per_s"],
        "zero_overhead_worker_over_bare": cores * 1000 / ideal / bare["frames_per_s"],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), to show who uses the cores during a run."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Role ("worker", "kafka broker", ...) -> its processes (several workers share one consumer group).
Processes = dict[str, tuple[int, ...]]


def role_cpu_seconds(pids: Processes) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}


# The warm-up ends once the local broker's JIT compiler threads used less than this share of its CPU during a burst.
JIT_SETTLED_SHARE = 0.10
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # HotSpot's names, cut to 15 characters by Linux


def thread_cpu_seconds(pid: int, named: tuple[str, ...] | None = None) -> dict[int, float]:
    """CPU seconds so far of each thread of ``pid`` by native thread id (Linux /proc); with ``named``, only the
    threads whose Linux name starts with one of those."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if named is not None and not (task / "comm").read_text().startswith(named):
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def jit_seconds(pid: int) -> float:
    """CPU time so far of a HotSpot JVM's JIT compiler threads."""
    return sum(thread_cpu_seconds(pid, JIT_THREADS).values())


def warm_up(
    settings: Settings,
    frames: list[bytes],
    pids: Processes,
    broker_pid: int | None,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Bursts of ``args.warmup_chunk`` frames, untimed, until at least ``args.warmup_frames`` were sent and the
    local broker's JIT compilers used under JIT_SETTLED_SHARE of its CPU in the last burst, or
    ``args.warmup_max_frames`` were sent. A broker that has run for a while has compiled its hot paths; a fresh one
    keeps compiling for ~20,000 frames here (its JIT threads: 0.2-0.5 CPU-ms per frame after 6,000 frames, under
    0.1 after ~20,000, against 0.4-0.6 for the rest of the broker), so a shorter warm-up times the JVM's start-up
    instead of the pipeline. With an external cluster (no local broker) only the minimum is sent. Returns one entry
    per burst: CPU-ms per frame of each process and the broker's JIT share."""
    trace: list[dict[str, Any]] = []
    sent = 0
    while sent < args.warmup_max_frames:
        jit_before = jit_seconds(broker_pid) if broker_pid else 0.0
        row = run_rate(settings, frames, None, args.warmup_chunk, f"warmup{len(trace)}", pids)
        sent += args.warmup_chunk
        entry: dict[str, Any] = {
            "frames": args.warmup_chunk,
            "sustained_fps": round(row["sustained_fps"], 1),
            "cpu_ms_per_frame": {name: round(cpu * 1000 / args.warmup_chunk, 3) for name, cpu in row["cpu_s"].items()},
        }
        if broker_pid:
            broker_cpu = row["cpu_s"].get("kafka broker", 0.0)
            entry["broker_jit_share"] = (
                round((jit_seconds(broker_pid) - jit_before) / broker_cpu, 3) if broker_cpu else 0.0
            )
        trace.append(entry)
        print(f"warm-up burst {len(trace)}: {json.dumps(entry)}", flush=True)
        if sent >= args.warmup_frames and (not broker_pid or entry["broker_jit_share"] < JIT_SETTLED_SHARE):
            break
    else:
        print(f"warning: the broker's JIT had not settled after {sent} warm-up frames", flush=True)
    return trace


def is_idle(used_s: dict[int, float], pids: Processes, busy_share: float) -> bool:
    """Whether the processes used (``used_s``: CPU seconds over one second, by pid) under ``busy_share`` of one
    core together, for each worker process, and under it each worker alone. With one worker that is the same as
    under ``busy_share`` together; six idle workers polling would not be idle by that measure (on a 16-core GPU
    machine the bench waited out every timeout), but one of six still catching up on a backlog is busy."""
    workers = pids.get("worker", ())
    return sum(used_s.values()) < busy_share * max(1, len(workers)) and all(
        used_s.get(pid, 0.0) < busy_share for pid in workers
    )


def settle(pids: Processes, busy_share: float = 0.1, timeout_s: float = 60.0) -> float:
    """Wait until the processes in ``pids`` are idle over a second (``is_idle``), and return the seconds waited.
    A burst leaves work behind it (the line-stats agent catching up on thousands of results, the broker's
    background work); a fixed-rate round that started into it would time that backlog."""

    def per_pid() -> dict[int, float]:
        return {pid: cpu_seconds(pid) for group in pids.values() for pid in group}

    start = time.monotonic()
    last = per_pid()
    while time.monotonic() - start < timeout_s:
        time.sleep(1.0)
        now = per_pid()
        if is_idle({pid: now[pid] - last[pid] for pid in now}, pids, busy_share):
            return time.monotonic() - start
        last = now
    print(f"warning: still busy after {timeout_s:.0f} s; timing the round anyway", flush=True)
    return time.monotonic() - start


def run_rate(
    settings: Settings, frames: list[bytes], fps: float | None, count: int, tag: str, pids: Processes | None = None
) -> dict[str, Any]:
    """Send ``count`` frames at ``fps`` (None = as fast as possible) from camera ``tag``; every frame is timed at
    the gate (arrival - capture) and in its result."""
    arrivals: dict[str, tuple[float, bool]] = {}  # part id -> (capture-to-gate ms, missed its deadline)

    def on_command(cmd: RejectCommand, missed: bool = False) -> None:
        if cmd.part_id.startswith(tag + "-"):
            arrivals[cmd.part_id] = ((time.time_ns() - cmd.capture_ts_ns) / 1e6, missed)

    # The camera first: its idempotent producer fetches a producer id in the background, which would otherwise
    # hold the first frames (and count a gateway's start-up as pipeline latency).
    camera = CameraGateway(settings, camera_id=tag)
    # The gate's consumer group is the same in every round, so a round's gate resumes where the previous one
    # stopped, and the reader starts at the end: neither spends the round's CPU on earlier rounds' records.
    # Silence alarms are reported, not logged: between rounds no frame is sent, a round's new gate may read the last
    # heartbeat of the previous burst, and a burst leaves verdicts for frames captured seconds ago, so a gate here
    # is right to say its line was idle or far behind at times.
    silences: list[float] = []
    gate = RejectGate(
        settings,
        on_missed=lambda cmd, margin: on_command(cmd, missed=True),
        on_silent=lambda line, lag_s: silences.append(round(lag_s, 1)),
    )
    reader = TopicReader(settings, settings.topic(topics.RESULTS), from_end=True)
    # The reader is the bench's instrument, not part of camera -> worker -> gate: it reads the round's results once
    # the gate has every command, so that its fetches and parsing do not compete with the pipeline for the cores.
    reader.consumer.pause(reader.consumer.assignment())
    while not gate.consumer.assignment():  # joined the group before the first frame
        for cmd in gate.poll(0.2):
            on_command(cmd)
    camera.producer.list_topics(timeout=10)
    stop = threading.Event()
    gate_thread = threading.Thread(target=gate.run, args=(stop, on_command), daemon=True)
    gate_thread.start()
    pids = pids or {}
    cpu_before = role_cpu_seconds(pids)
    start = time.monotonic()
    stats = camera.run(((("", f, "image/jpeg") for f in islice(cycle(frames), count))), fps=fps)
    deadline = time.monotonic() + 120
    while len(arrivals) < count and time.monotonic() < deadline:  # every verdict is a review: a command per frame
        time.sleep(0.05)
    done = time.monotonic()
    cpu = {name: round(seconds - cpu_before[name], 2) for name, seconds in role_cpu_seconds(pids).items()}
    stop.set()
    gate_thread.join(10)
    mine: list[InspectionResult] = []
    parsed = 0

    def collect(records: list) -> bool:  # parse only what arrived since the last call
        nonlocal parsed
        mine.extend(
            r for r in map(InspectionResult.from_json, (x.value for x in records[parsed:])) if r.camera_id == tag
        )
        parsed = len(records)
        return len(mine) >= count

    reader.consumer.resume(reader.consumer.assignment())
    reader.read_until(collect, timeout_s=60)
    reader.close()
    decided = sorted(r.decided_ts_ns for r in mine)
    # Sustained rate: verdicts per second between the 10th and 90th percentile of completion, past start-up.
    lo, hi = decided[len(decided) // 10], decided[(9 * len(decided)) // 10]
    sustained = (0.8 * len(decided)) / ((hi - lo) / 1e9) if hi > lo else float("nan")
    lat = [ms for ms, _ in arrivals.values()]
    return {
        "offered_fps": fps,
        "frames": count,
        "sent": stats.sent,
        "results": len(mine),
        "gate_commands": len(arrivals),
        "deadline_misses": sum(missed for _, missed in arrivals.values()),
        # Frames the broker had not acknowledged by their gate deadline (the camera's on_unconfirmed); expected in
        # the bursts, where the camera sends far faster than anything downstream takes the frames.
        "not_in_kafka_by_deadline": stats.unconfirmed_by_deadline,
        "gate_silence_alarms_s": silences,  # the lag at each alarm
        "capture_to_gate_ms": {
            "p50": nearest_rank(lat, 0.5),
            "p95": nearest_rank(lat, 0.95),
            "p99": nearest_rank(lat, 0.99),
        },
        "capture_to_decision_ms_p99": nearest_rank([r.timings_ms["total_since_capture"] for r in mine], 0.99),
        # Where the tail comes from: waiting before the worker had the frame, or the batch's own work.
        "queue_wait_ms_p99": nearest_rank([r.timings_ms["queue_wait"] for r in mine], 0.99),
        "inference_ms_p99": nearest_rank([r.timings_ms["inference"] for r in mine], 0.99),
        "slow_frames": sorted(
            (
                {"capture_s": round((r.capture_ts_ns - mine[0].capture_ts_ns) / 1e9, 3), **r.timings_ms}
                for r in mine
                if r.timings_ms["total_since_capture"] > 150
            ),
            key=lambda x: x["capture_s"],
        )[:20],
        "slowest": slowest_frames(arrivals, mine),
        "mean_batch": statistics.fmean(r.batch_size for r in mine) if mine else float("nan"),
        "sustained_fps": sustained,
        "wall_s": done - start,
        "cpu_s": cpu,
    }


def slowest_frames(
    arrivals: dict[str, tuple[float, bool]], results: list[InspectionResult], n: int = SLOWEST_FRAMES
) -> list[dict[str, Any]]:
    """The ``n`` frames slowest to the gate, each with its result's breakdown, batch size and worker: where a
    round's p99 comes from (with 200-400 frames a round, p99 is one of its 2-4 slowest)."""
    by_part = {r.part_id: r for r in results}
    first_capture = min((r.capture_ts_ns for r in results), default=0)
    rows = []
    for part, (to_gate_ms, _) in sorted(arrivals.items(), key=lambda kv: kv[1][0], reverse=True)[:n]:
        row: dict[str, Any] = {"part_id": part, "to_gate": round(to_gate_ms, 1)}
        if (r := by_part.get(part)) is not None:
            row |= {
                "capture_s": round((r.capture_ts_ns - first_capture) / 1e9, 3),
                **r.timings_ms,
                "batch_size": r.batch_size,
                "worker_id": r.worker_id,
            }
        rows.append(row)
    return rows


def worker_settings(base: Settings, args: argparse.Namespace, engine_classes: list[str], run: str) -> Settings:
    """The bench worker: every verdict a review, so every frame sends a command and is timed at the gate, and no
    frame a retraining sample (a line samples a small share; one per frame sends every image back to Kafka)."""
    return base.replace(
        topic_prefix=f"e2e-{run}",
        app_id=f"e2e-worker-{run}",
        web_port=free_port(),
        model_path=args.model,
        engine=args.engine,
        max_batch=args.max_batch,
        inference_threads=args.threads,
        inference_streams=args.streams,
        decode_threads=args.decode_threads,
        decision_thresholds="1.0",
        # Any class of the model will do: with a threshold of 1.0 every verdict is a review anyway.
        ok_class=base.ok_class if base.ok_class in engine_classes else engine_classes[0],
        line_travel_ms=str(args.budget_ms),
        retrain_low_confidence_below=0.0,
        retrain_audit_rate=0.0,
        retrain_reviews=False,
        model_reload_interval_s=0,
    )


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.bursts < 1:
        raise ValueError(f"--bursts must be at least 1, got {args.bursts}")
    for name in ("workers", "decode_threads"):  # none would leave the pipeline or the bare engine without frames
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    worker_cores = parse_cores(args.worker_cores)
    other_cores = os.sched_getaffinity(0) - worker_cores if worker_cores else set()
    if args.threads is None:
        args.threads = len(worker_cores) if worker_cores else os.cpu_count()
    # The frames are made on the cores the worker and the bare engine will have: OpenCV starts its thread pool on
    # first use, and a pool started on every core would decode the bare engine's frames outside them.
    with on_cores(worker_cores):
        frames = make_frames(args.width, args.height)
    with on_cores(other_cores):  # the broker, and the camera, gate and reader threads started from here
        pipeline = measure_pipeline(args, frames, worker_cores)
    bursts, slots = pipeline["bursts"], pipeline["bare_slots"]
    pair_bursts_with_bare(bursts, slots)
    burst = median_burst(bursts)
    bare, overlapped = bare_summary(slots, "one_loop"), bare_summary(slots, "overlapped")
    result = {
        "machine": machine_info(args.threads),
        "model": str(args.model),
        "frame": f"{args.width}x{args.height} JPEG q90 ({statistics.fmean(len(f) for f in frames) / 1024:.0f} KB)",
        "budget_ms": args.budget_ms,
        # Empty: worker, broker and bench shared every core. Else the worker and the bare engine ran on worker_cores
        # and the broker and the bench's clients on other_cores.
        "worker_cores": sorted(worker_cores),
        "other_cores": sorted(other_cores),
        "workers": args.workers,
        "worker_settings": pipeline["worker_settings"],
        "warmup": pipeline["warmup"],
        "fixed_rates": pipeline["fixed_rates"],
        "max_rate": burst,
        # Every burst in the order run, each with the bare engine beside it and its ratio; max_rate is the median one.
        "max_rate_bursts": bursts,
        # Every bare-engine measurement in the order run: before each burst, and after the last.
        "bare_slots": slots,
        "bare": bare,
        "bare_overlapped": overlapped,
        # The ratios that count: each burst against the bare engine beside it, the median over the bursts.
        "ratio_reading": "median over bursts of sustained rate / mean of the bare measurements just before and after",
        "max_rate_over_bare": lower_median([b["ratio"]["one_loop"] for b in bursts]),
        "max_rate_over_bare_overlapped": lower_median([b["ratio"]["overlapped"] for b in bursts]),
        # What the shared cores could carry; with the worker on cores of its own, its cores are the limit instead.
        "cpu_ceiling": None
        if worker_cores
        else cpu_ceiling(burst["bare_beside"]["one_loop"], burst, os.cpu_count() or 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print_table(result)
    save_result(args.out, "e2e_bench", result)
    return result


def measure_bare(
    args: argparse.Namespace, frames: list[bytes], worker_cores: set[int], when: str, pids: Processes
) -> dict[str, Any]:
    """The bare engine's two references (one loop; decode overlapped with inference) on the worker's cores, and the
    CPU the idle broker and worker used meanwhile (they run beside it, as they run beside the bursts; the bench's
    own process, which runs the bare engine, is not counted)."""
    others = {role: group for role, group in pids.items() if os.getpid() not in group}
    cpu_before, start = role_cpu_seconds(others), time.monotonic()
    with on_cores(worker_cores):
        bare = bare_throughput(args.model, args.engine, args.threads, args.max_batch, frames, streams=args.streams)
        print(
            f"bare {bare['engine']} at batch {bare['batch']} ({when}): {bare['frames_per_s']:.1f} frames/s", flush=True
        )
        # The worker overlaps decode and inference (its decode and infer threads): the same without Kafka.
        overlapped = bare_throughput(
            args.model,
            args.engine,
            args.threads,
            args.max_batch,
            frames,
            overlap_decode=True,
            streams=args.streams,
            decode_threads=args.decode_threads * args.workers,
        )
    wall = time.monotonic() - start
    print(f"bare, decode overlapped with inference ({when}): {overlapped['frames_per_s']:.1f} frames/s", flush=True)
    for reference in (bare, overlapped):
        # CPU time / wall time: how many cores the bare engine kept busy; above its cores, threads ran elsewhere.
        reference["cores_busy"] = round(reference["frames_per_s"] * reference["cpu_ms_per_frame"] / 1000, 2)
        if worker_cores and reference["cores_busy"] > len(worker_cores) * 1.05:
            print(f"warning: the bare engine kept {reference['cores_busy']} cores busy, on {len(worker_cores)}")
    idle = {role: round(seconds - cpu_before[role], 2) for role, seconds in role_cpu_seconds(others).items()}
    # The idle broker and worker (timers, heartbeats, fetch polls) took some of the bare engine's cores: given back
    # in proportion, so that they cannot flatter the ratio (a bare rate they slowed is a lower bar). With the worker
    # on cores of its own, the broker runs elsewhere and only the worker competes.
    cores = len(worker_cores) or os.cpu_count() or 1
    competing = (idle.get("worker", 0.0) if worker_cores else sum(idle.values())) / wall
    return {
        "when": when,
        "one_loop": bare,
        "overlapped": overlapped,
        "wall_s": round(wall, 1),
        "pipeline_cpu_s": idle,
        "competing_cores": round(competing, 3),
        "given_back": cores / max(cores - competing, 0.5 * cores),
    }


def measure_pipeline(args: argparse.Namespace, frames: list[bytes], worker_cores: set[int]) -> dict[str, Any]:
    """Broker and worker up: the warm-up, the fixed rates and the bursts; everything stopped on return."""
    base = Settings.from_env()
    engine_classes = load_engine(args.model, kind=args.engine, threads=1).class_names
    rows = []
    with kafka_cluster(base) as cluster:
        run = uuid.uuid4().hex[:6]
        settings = worker_settings(base.replace(kafka_bootstrap_servers=cluster.bootstrap), args, engine_classes, run)
        create_topics(settings)
        with contextlib.ExitStack() as stack:
            workers = []
            for i in range(args.workers):  # one consumer group: the frames' partitions are shared among them
                log_path = settings.cache_dir / "run" / f"e2e-worker-{run}{f'-{i + 1}' if i else ''}.log"
                with on_cores(worker_cores):
                    # Own ids, so that a result (and a round's slowest frames) names the worker that made it.
                    own = settings.replace(worker_id=f"{settings.worker_id}-w{i + 1}")
                    own = own if i == 0 else own.replace(web_port=free_port())
                    workers.append(stack.enter_context(WorkerProcess(own, log_path)))
            for worker in workers:
                worker.wait_ready()
            pids: Processes = {
                "worker": tuple(w.proc.pid for w in workers),
                "bench (camera, gate, reader)": (os.getpid(),),
            }
            if cluster.local is not None:
                pids["kafka broker"] = (cluster.local.pid,)
            warmup = warm_up(settings, frames, pids, cluster.local.pid if cluster.local else None, args)
            for fps in [float(r) for r in args.rates.split(",") if r.strip()]:
                waited = settle(pids)
                row = run_rate(settings, frames, fps, int(fps * args.seconds), f"rate{fps:g}")
                row["settled_s"] = round(waited, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
            bursts, slots = [], []
            for i in range(args.bursts):
                settle(pids)
                slots.append(measure_bare(args, frames, worker_cores, f"before burst {i + 1}", pids))
                waited = settle(pids)
                burst = run_rate(settings, frames, None, args.burst, f"burst{i}", pids)
                burst["settled_s"] = round(waited, 1)
                bursts.append(burst)
                print(json.dumps(burst), flush=True)
            settle(pids)
            slots.append(measure_bare(args, frames, worker_cores, "after the last burst", pids))
            for worker in workers:
                if worker.returncode is not None:
                    raise RuntimeError(f"worker died:\n{worker.log_tail()}")
    return {
        "warmup": warmup,
        "fixed_rates": rows,
        "bursts": bursts,
        "bare_slots": slots,
        # What the worker was asked to do: the workload behind every figure.
        "worker_settings": {
            name: getattr(settings, name)
            for name in (
                "max_batch",
                "max_wait_s",
                "max_batches_in_flight",
                "inference_threads",
                "inference_streams",
                "decode_threads",
                "pin_inference_threads",
                "decision_thresholds",
                "retrain_low_confidence_below",
                "retrain_audit_rate",
                "retrain_reviews",
                "stats_windows_s",
            )
        },
    }


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    workers = result.get("workers", 1)
    print(
        f"\n{m['cpu']}, {workers} worker{'s' if workers > 1 else ''} of {m['threads']} threads; {result['frame']}; "
        f"budget {result['budget_ms']:.0f} ms"
    )
    if result.get("worker_cores"):
        print(
            f"worker and bare engine on cores {result['worker_cores']}, broker and bench clients on "
            f"{result['other_cores']}"
        )
    print(
        "| offered rate | frames | capture->gate p50 / p95 / p99 ms | deadline misses | not in Kafka by deadline "
        "| mean batch |"
    )
    print("|---|---|---|---|---|---|")
    for r in result["fixed_rates"]:
        c = r["capture_to_gate_ms"]
        print(
            f"| {r['offered_fps']:.0f} fps | {r['frames']} | {c['p50']:.1f} / {c['p95']:.1f} / {c['p99']:.1f} "
            f"| {r['deadline_misses']} | {r.get('not_in_kafka_by_deadline', 'n/a')} | {r['mean_batch']:.1f} |"
        )
    b, o = result["bare"], result["bare_overlapped"]
    print(
        f"\nmaximum sustained rate, bursts of {result['max_rate']['frames']} frames, each beside the bare "
        f"{b['engine']} engine (decode + predict at batch {b['batch']}, no Kafka) measured just before and just after "
        f"it, with the idle pipeline's CPU given back; overlapped = the worker's stages without Kafka, "
        f"{o.get('decode_threads', 1)} decode threads"
    )
    print("| burst | sustained frames/s | mean batch | bare one loop | ratio | bare overlapped | ratio |")
    print("|---|---|---|---|---|---|---|")
    for i, x in enumerate(result["max_rate_bursts"]):
        beside, ratio = x["bare_beside"], x["ratio"]
        print(
            f"| {i + 1} | {x['sustained_fps']:.1f} | {x['mean_batch']:.1f} "
            f"| {beside['one_loop']['frames_per_s']:.1f} | {ratio['one_loop']:.3f} "
            f"| {beside['overlapped']['frames_per_s']:.1f} | {ratio['overlapped']:.3f} |"
        )
    idle = max(slot["competing_cores"] for slot in result["bare_slots"])
    print(
        f"median: {result['max_rate']['sustained_fps']:.1f} frames/s; ratio {result['max_rate_over_bare']:.3f} "
        f"(one loop), {result['max_rate_over_bare_overlapped']:.3f} (overlapped). Bare one loop "
        f"{b['range_frames_per_s'][0]:.1f}-{b['range_frames_per_s'][1]:.1f} frames/s over the run as measured; the "
        f"idle pipeline beside it took at most {idle:.3f} cores, given back to it in the ratios"
    )
    wall = result["max_rate"]["wall_s"]
    print(
        f"CPU during the burst ({m['logical_cpus']} cores): "
        + ", ".join(f"{name} {cpu:.1f} s" for name, cpu in result["max_rate"]["cpu_s"].items())
        + f" over {wall:.1f} s"
    )
    ceiling = result.get("cpu_ceiling")
    if ceiling:
        print(
            f"CPU ceiling: {ceiling['cpu_ms_per_frame']:.1f} CPU-ms per frame through the whole pipeline -> at most "
            f"{ceiling['frames_per_s']:.0f} frames/s on these cores, {ceiling['over_bare']:.2f} of bare; "
            f"{ceiling['zero_overhead_worker_over_bare']:.2f} of bare with a worker costing only decode + inference"
        )


if __name__ == "__main__":
    # Ended by `timeout` or a job runner (SIGTERM), the bench still stops the broker and the workers it started.
    on_sigterm(interrupt)
    main(get_args_parser().parse_args())
