"""The worker's inspection stages, each in threads of its own, driven from an asyncio loop.

Kept apart from the Faust app (streams.worker.app) so that bench/worker_stages.py times exactly what the worker runs,
without Kafka. No Faust or Kafka import here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from models.engines.warmup import warm_up
from streams.inspection import FrameInspector, IncomingFrame, Outgoing

T = TypeVar("T")


class InspectionStages:
    """Decode, infer and decide (:class:`FrameInspector`'s three stages) for one batch at a time per thread.

    - ``decode_threads``: batches decoded at once. OpenCV's decode and resize run without the GIL, so more threads
      help where decode is the slowest stage (a GPU worker); on a CPU worker they only compete with inference.
    - inference: one thread per batch the engine infers at once (``engine.concurrent_batches``, OpenVINO streams).
      These threads run only the model, so they go from one batch straight to the next: verdicts cost ~10 us a frame
      alone, but ~190 us on the inference thread of a busy worker.
    - decide: one thread, so a batch's commands never queue behind the decode of a later batch.

    Batches may finish out of order when a stage has several threads; the caller delivers them in order
    (streams.worker.pipeline.BatchPipeline)."""

    def __init__(self, inspector: FrameInspector, *, decode_threads: int = 1) -> None:
        if decode_threads < 1:
            raise ValueError(f"decode_threads must be at least 1, got {decode_threads}")
        self.inspector = inspector
        self.threads = {"decode": decode_threads, "infer": inspector.serving.engine.concurrent_batches, "decide": 1}
        self._pools = {
            name: ThreadPoolExecutor(max_workers=n, thread_name_prefix=name) for name, n in self.threads.items()
        }
        self._clock = time.monotonic
        self._running: dict[object, tuple[str, float]] = {}  # a stage call now running -> (stage, started)
        self._running_lock = threading.Lock()

    @property
    def batches_to_keep_busy(self) -> int:
        """Batches in flight that keep every stage thread busy: two per thread, the one it works on and the next,
        ready when it is done. One per thread is not enough, because a batch keeps its place in flight until it is
        delivered and acked, in order: a batch inferred before the older one beside it, and one waiting for
        Kafka's acknowledgement, hold places no stage works on. With one per thread (4 with one OpenVINO worker's
        defaults), py-spy found the inference threads waiting for a batch 14.5% of a 6000-frame burst; with two
        per thread (8), 2.5% (2 cores, INT8 ResNet-50 at batch 8, 2 streams)."""
        return 2 * sum(self.threads.values())

    def in_flight_warning(self, max_batches_in_flight: int) -> str | None:
        """Why ``max_batches_in_flight`` leaves stage threads idle, or None when it does not."""
        if max_batches_in_flight >= self.batches_to_keep_busy:
            return None
        return (
            f"max_batches_in_flight={max_batches_in_flight}: fewer than two batches in flight per stage thread "
            f"({self.threads}); under load some threads will wait for a batch"
        )

    def warm_up(self, max_batch: int) -> dict[int, float]:
        """Run every batch size from 1 to ``max_batch`` through the serving engine on each inference thread, before
        frames arrive; returns, per size, its slowest first call over the threads (ms).

        On the inference threads themselves, because an engine may keep per-thread state: PyTorch keeps cuDNN's
        execution plans per thread (``thread_local`` in ATen's cuDNN convolution), so the plans the engine loader's
        thread built are built again on a serving thread's first batch of each size: 75-99 ms each for the
        ResNet-50 at 160 px in FP16 on an H200, against 5-10 ms warm (bench/first_calls.py). At line rates that first
        batch of a size turned up in the middle of a run, one per worker, and set the p99 of a multi-worker round."""
        n = self.threads["infer"]
        engine = self.inspector.serving.engine
        every_thread = threading.Barrier(n)  # each call holds its thread until all n have one

        def on_this_thread() -> dict[int, float]:
            every_thread.wait(timeout=60)
            return warm_up(engine, max_batch)

        per_thread = [f.result() for f in [self._pools["infer"].submit(on_this_thread) for _ in range(n)]]
        return {size: max(first[size] for first in per_thread) for size in per_thread[0]}

    def follow_engine(self) -> None:
        """After a hot reload: as many inference threads as the engine now serving infers batches at once. Batches
        already handed to the old threads finish there."""
        wanted = self.inspector.serving.engine.concurrent_batches
        if wanted == self.threads["infer"]:
            return
        old = self._pools["infer"]
        self._pools["infer"] = ThreadPoolExecutor(max_workers=wanted, thread_name_prefix="infer")
        self.threads["infer"] = wanted
        old.shutdown(wait=False)

    def longest_running(self) -> tuple[str, float] | None:
        """The stage of the stage call that has been running longest, and for how many seconds; None when no call
        runs. Only calls a thread is working on count, not batches queued for a thread: a busy worker's batches wait,
        a stuck one's call never returns (a hung driver or model call). See the worker's stage watchdog."""
        with self._running_lock:
            calls = list(self._running.values())
        if not calls:
            return None
        stage, started = min(calls, key=lambda call: call[1])
        return stage, self._clock() - started

    def _timed(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        """Runs in the stage's thread: ``fn(*args)``, known to :meth:`longest_running` while it runs."""
        token = object()
        with self._running_lock:
            self._running[token] = (stage, self._clock())
        try:
            return fn(*args)
        finally:
            with self._running_lock:
                del self._running[token]

    async def run(self, frames: list[IncomingFrame]) -> tuple[list[Outgoing], float]:
        """Decode, infer and decide ``frames``; returns the records and the batch's own decode + inference time (s).
        The model is chosen here, on the event loop, so batches meet a hot reload in the order they were taken even
        when several decode threads start them out of order."""
        loop = asyncio.get_running_loop()
        inspector = self.inspector
        serving = inspector.serving
        decoded = await loop.run_in_executor(
            self._pools["decode"], self._timed, "decode", inspector.decode, frames, serving
        )
        inferred = await loop.run_in_executor(self._pools["infer"], self._timed, "infer", inspector.infer, decoded)
        outgoing = await loop.run_in_executor(self._pools["decide"], self._timed, "decide", inspector.decide, inferred)
        return outgoing, (decoded.decode_ms * len(frames) + inferred.infer_ms) / 1000

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
