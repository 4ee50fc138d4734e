"""The worker's inspection stages, each in threads of its own, driven from an asyncio loop.

Kept apart from the Faust app (streams.worker.app) so that bench/worker_stages.py times exactly what the worker runs,
without Kafka. No Faust or Kafka import here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from models.engines.base import InferenceEngine
from models.engines.warmup import warm_up
from streams.inspection import FrameInspector, IncomingFrame, Outgoing, ServingModel

log = logging.getLogger(__name__)

T = TypeVar("T")


def log_warm_up(where: str, first_ms: dict[int, float], seconds: float) -> None:
    slowest = max(first_ms, key=first_ms.__getitem__)
    log.info(
        "batch sizes 1-%d warmed up on %s in %.1f s (slowest first call: batch %d, %.0f ms)",
        max(first_ms),
        where,
        seconds,
        slowest,
        first_ms[slowest],
    )


class _InferenceLane:
    """One model's inference threads. A batch is inferred on the threads of the model it was taken with, and a
    model's threads are warmed up for it before it serves (see :meth:`InspectionStages.prepare`).

    ``after``: the lanes of earlier models that still had batches when this one took over. Those batches were all
    taken earlier, and they are inferred before this lane's first batch, as they would be on shared threads: no
    live batch of this model is inferred beside a live batch of an older one, and across a swap verdicts are
    decided old model first."""

    def __init__(self, serving: ServingModel, pool: ThreadPoolExecutor) -> None:
        self.serving = serving
        self.pool = pool
        self.after: list[_InferenceLane] = []  # set when it takes over (InspectionStages._take_over)
        self.batches = 0  # batches taken for this model and not yet inferred
        self._idle: list[asyncio.Future[None]] = []  # waiting for batches to reach 0

    async def until_idle(self) -> None:
        while self.batches:
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter

    def batch_inferred(self) -> None:
        self.batches -= 1
        if self.batches == 0:
            for waiter in self._idle:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle.clear()


@dataclass(frozen=True)
class PreparedEngine:
    """An engine that does not serve yet, with inference threads of its own already warmed up for it."""

    engine: InferenceEngine
    pool: ThreadPoolExecutor
    first_ms: dict[int, float]  # per batch size, its slowest first call over the threads


class InspectionStages:
    """Decode, infer and decide (:class:`FrameInspector`'s three stages) for one batch at a time per thread.

    - ``decode_threads``: batches decoded at once. OpenCV's decode and resize run without the GIL, so more threads
      help where decode is the slowest stage (a GPU worker); on a CPU worker they only compete with inference.
    - inference: one thread per batch the engine infers at once (``engine.concurrent_batches``, OpenVINO streams).
      These threads run only the model, so they go from one batch straight to the next: verdicts cost ~10 us a frame
      alone, but ~190 us on the inference thread of a busy worker.
    - decide: one thread, so a batch's commands never queue behind the decode of a later batch.

    Batches may finish out of order when a stage has several threads; the caller delivers them in order
    (streams.worker.pipeline.BatchPipeline).

    A hot reload goes through :meth:`prepare` and :meth:`swap`, so that the new model's first live batches run on
    threads that have already met every batch size with it."""

    def __init__(self, inspector: FrameInspector, *, decode_threads: int = 1) -> None:
        if decode_threads < 1:
            raise ValueError(f"decode_threads must be at least 1, got {decode_threads}")
        self.inspector = inspector
        engine = inspector.serving.engine
        self.threads = {"decode": decode_threads, "infer": engine.concurrent_batches, "decide": 1}
        self._pools = {
            name: ThreadPoolExecutor(max_workers=self.threads[name], thread_name_prefix=name)
            for name in ("decode", "decide")
        }
        self._lane = _InferenceLane(inspector.serving, self._inference_threads(engine))
        self._retiring: list[_InferenceLane] = []  # lanes of models swapped out, until their last batch is inferred
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
        execution plans per thread (``thread_local`` in ATen's cuDNN convolution), so plans another thread built are
        built again on a serving thread's first batch of each size: 75-99 ms each for the ResNet-50 at 160 px in FP16
        on an H200, against 5-10 ms warm (bench/first_calls.py). At line rates that first batch of a size turned up
        in the middle of a run, one per worker, and set the p99 of a multi-worker round."""
        return self._warm(self._lane.pool, self._lane.serving.engine, max_batch)

    def prepare(self, engine: InferenceEngine, max_batch: int) -> PreparedEngine:
        """New inference threads for ``engine``, warmed up for it as :meth:`warm_up` does, while the serving model
        goes on with its own threads; hand the result to :meth:`swap`. Blocks for the warm-up: call it from a thread
        of its own. Refuses (ValueError) an engine whose classes the decision policy does not fit, before any
        warm-up."""
        self.inspector.serving.decisions.check(engine.class_names)
        pool = self._inference_threads(engine)
        try:
            first_ms = self._warm(pool, engine, max_batch)
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return PreparedEngine(engine, pool, first_ms)

    def swap(self, prepared: PreparedEngine) -> ServingModel:
        """Serve the prepared engine, on its own threads, from the next batch on; returns the model it replaces.
        Call it on the event loop that runs the batches. Batches taken before finish on the old model and its
        threads, which stop once the last of them is inferred."""
        try:
            old = self.inspector.swap_engine(prepared.engine)
        except BaseException:
            prepared.pool.shutdown(wait=False)
            raise
        self._take_over(_InferenceLane(self.inspector.serving, prepared.pool))
        return old

    @staticmethod
    def _inference_threads(engine: InferenceEngine) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=engine.concurrent_batches, thread_name_prefix="infer")

    @staticmethod
    def _warm(pool: ThreadPoolExecutor, engine: InferenceEngine, max_batch: int) -> dict[int, float]:
        n = engine.concurrent_batches
        every_thread = threading.Barrier(n)  # each call holds its thread until all n have one

        def on_this_thread() -> dict[int, float]:
            every_thread.wait(timeout=60)
            return warm_up(engine, max_batch)

        per_thread = [f.result() for f in [pool.submit(on_this_thread) for _ in range(n)]]
        return {size: max(first[size] for first in per_thread) for size in per_thread[0]}

    def _lane_for_next_batch(self) -> _InferenceLane:
        serving = self.inspector.serving
        if serving is not self._lane.serving:
            # Swapped on the inspector directly, past prepare() and swap(): serve it anyway, on threads that have
            # not met it yet (its first batch of each size pays the engine's first-call cost).
            log.warning(
                "model %s swapped in without InspectionStages.swap: its threads were not warmed up", serving.version
            )
            self._take_over(_InferenceLane(serving, self._inference_threads(serving.engine)))
        return self._lane

    def _take_over(self, lane: _InferenceLane) -> None:
        """``lane`` serves the next batch on; the lanes before it retire once their batches are inferred."""
        self._retiring.append(self._lane)
        lane.after = [old for old in self._retiring if old.batches]  # every older model, not only the last one
        self._lane = lane
        self.threads["infer"] = lane.serving.engine.concurrent_batches
        self._stop_idle_lanes()

    def _stop_idle_lanes(self) -> None:
        for lane in [lane for lane in self._retiring if lane.batches == 0]:
            lane.pool.shutdown(wait=False)  # nothing is queued on it any more: its threads just end
            self._retiring.remove(lane)
        # Let the old engines go now, not at the new model's first batch (on a GPU they hold device memory).
        self._lane.after = [lane for lane in self._lane.after if lane.batches]

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
        The model (and with it the inference threads) is chosen here, on the event loop, so batches meet a hot reload
        in the order they were taken even when several decode threads start them out of order."""
        loop = asyncio.get_running_loop()
        inspector = self.inspector
        lane = self._lane_for_next_batch()
        lane.batches += 1
        inferring = None
        try:
            decoded = await loop.run_in_executor(
                self._pools["decode"], self._timed, "decode", inspector.decode, frames, lane.serving
            )
            if lane.after:
                await asyncio.gather(*(older.until_idle() for older in lane.after))
            inferring = lane.pool.submit(self._timed, "infer", inspector.infer, decoded)
            # Counted down when the thread is done, not when this coroutine goes on: were it cancelled while the
            # batch infers, a newer model's first batch must still wait for the thread (see _InferenceLane).
            inferring.add_done_callback(lambda _: self._call_on_loop(loop, self._batch_inferred, lane))
            inferred = await asyncio.wrap_future(inferring, loop=loop)
        finally:
            if inferring is None:  # never reached the inference thread
                self._batch_inferred(lane)
        outgoing = await loop.run_in_executor(self._pools["decide"], self._timed, "decide", inspector.decide, inferred)
        return outgoing, (decoded.decode_ms * len(frames) + inferred.infer_ms) / 1000

    def _batch_inferred(self, lane: _InferenceLane) -> None:
        lane.batch_inferred()
        self._stop_idle_lanes()

    @staticmethod
    def _call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits for the lane any more
            loop.call_soon_threadsafe(fn, *args)

    def shutdown(self) -> None:
        for pool in [*self._pools.values(), self._lane.pool, *(lane.pool for lane in self._retiring)]:
            pool.shutdown(wait=True)
