"""Hot reload: the model at the model path is loaded and warmed up beside the serving one, then swapped in.

Kept apart from the Faust app (streams.worker.app, which calls it from its reload timer and ``POST /reload``) so that
its failure modes are tested without a broker. No Faust or Kafka import here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from models.engines.base import InferenceEngine
from streams.worker.metrics import WorkerMetrics
from streams.worker.stages import InspectionStages, PreparedEngine, log_warm_up

log = logging.getLogger(__name__)


def model_fingerprint(path: Path | None) -> str | None:
    """What identifies the model at ``path``: its (resolved) artifact file, size and mtime; None when there is none."""
    if path is None:
        return None
    target = path / "artifact.json" if path.is_dir() else path
    try:
        st = target.stat()
    except OSError:
        return None
    return f"{target.resolve()}:{st.st_size}:{st.st_mtime_ns}"


class ModelReloader:
    """Swaps in the model at ``model_path`` when it changed (or when forced), one reload at a time.

    The new model is loaded and warmed up on threads of its own while the old one serves (see
    :meth:`InspectionStages.prepare`). A model that fails to load, does not fit the decision policy, or takes longer
    than ``timeout_s`` to load and warm up is refused and the old one keeps serving; that model file is not tried
    again until it changes or a reload is forced. The timeout matters because a hung model or driver call in the
    new model's warm-up would otherwise hold the reload lock for good: no later reload could run. Its thread cannot
    be stopped; should it ever finish, its inference threads are let go."""

    def __init__(
        self,
        stages: InspectionStages,
        metrics: WorkerMetrics,
        *,
        model_path: Path | None,
        load: Callable[[], InferenceEngine],
        max_batch: int,
        timeout_s: float,
    ) -> None:
        self.stages = stages
        self.metrics = metrics
        self.model_path = model_path
        self.timeout_s = timeout_s
        self._load = load
        self._max_batch = max_batch
        self._lock = asyncio.Lock()
        self._serving = model_fingerprint(model_path)
        self._failed: str | None = None

    async def reload(self, *, force: bool = False) -> dict:
        """Reload if the model file changed since the last reload (or its failure), or always with ``force``.
        Returns what happened: ``reloaded``, ``model_version`` (serving now), and ``previous_version`` or ``error``."""
        async with self._lock:
            serving = self.stages.inspector.serving
            fingerprint = model_fingerprint(self.model_path)
            if not force and fingerprint in (self._serving, self._failed):
                return {"reloaded": False, "model_version": serving.version}
            try:
                prepared = await self._load_and_prepare()
                old = self.stages.swap(prepared)
            except Exception as exc:
                self._failed = fingerprint
                self.metrics.model_reloads.labels("failed").inc()
                log.error("model reload from %s failed, still serving %s: %s", self.model_path, serving.version, exc)
                return {"reloaded": False, "error": str(exc), "model_version": serving.version}
            self._serving, self._failed = fingerprint, None
            self.metrics.model_reloads.labels("ok").inc()
            self.metrics.serving(prepared.engine)
            return {"reloaded": True, "previous_version": old.version, "model_version": prepared.engine.version}

    async def _load_and_prepare(self) -> PreparedEngine:
        # On a daemon thread of its own rather than the loop's executor, whose threads are joined at exit: a hung
        # load() then holds up nothing. A hung warm-up still sits on the new model's inference threads, which are.
        work: concurrent.futures.Future[PreparedEngine] = concurrent.futures.Future()

        def load_and_prepare() -> None:
            # From now on neither a timeout nor a cancelled reload can cancel it: its outcome is still needed to let
            # its threads go.
            if not work.set_running_or_notify_cancel():
                return
            try:
                work.set_result(self._load_and_prepare_blocking())
            except BaseException as exc:
                work.set_exception(exc)

        threading.Thread(target=load_and_prepare, name="model-reload", daemon=True).start()
        waiting = asyncio.wrap_future(work)
        try:
            # asyncio.wait, not wait_for: a TimeoutError raised by load() itself (a network file system) is the
            # load's failure, not this timeout.
            await asyncio.wait({waiting}, timeout=self.timeout_s if self.timeout_s > 0 else None)
        except asyncio.CancelledError:  # the worker is stopping
            waiting.cancel()
            work.add_done_callback(_let_go)
            raise
        if not waiting.done():
            waiting.cancel()  # only this wait: the thread goes on
            work.add_done_callback(_let_go)
            raise TimeoutError(
                f"the new model was not loaded and warmed up within {self.timeout_s:g} s "
                "(DEFECTSTREAM_MODEL_RELOAD_TIMEOUT_S): a hung model or driver call? Its thread cannot be stopped; "
                "should it hang on, stopping this worker exits without it shortly after the final commit"
            )
        return waiting.result()

    def _load_and_prepare_blocking(self) -> PreparedEngine:
        engine = self._load()
        started = time.perf_counter()
        prepared = self.stages.prepare(engine, self._max_batch)
        log_warm_up("the new model's inference threads", prepared.first_ms, time.perf_counter() - started)
        return prepared


def _let_go(work: concurrent.futures.Future[PreparedEngine]) -> None:
    """A reload given up on (timed out, or the worker stopping) finished after all: nothing will serve its model, so
    its inference threads end."""
    if not work.cancelled() and work.exception() is None:
        prepared = work.result()
        log.warning("a reload given up on finished after all (%s); it is not swapped in", prepared.engine.version)
        prepared.pool.shutdown(wait=False)
