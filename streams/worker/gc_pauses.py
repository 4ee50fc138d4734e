"""Keep Python's garbage collector from stopping the worker for a fifth of a second, and measure what it still costs.

Once torch, OpenVINO and Faust are imported and the model is loaded, the worker process tracks ~400,000 container
objects, and a full (generation 2) collection walks all of them: ~200 ms here, during which every Python thread
stops — the event loop neither fetches frames nor delivers verdicts, the inference thread stalls between native
calls. At a 200 ms gate budget one such pause makes a batch of late reject commands. Those objects live as long as
the process, so :func:`freeze_startup_objects` moves them out of the collector's reach once, after start-up
(``gc.freeze``); a full collection then walks only what the worker created since (2-4 ms here).
"""

from __future__ import annotations

import atexit
import gc
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# A pause this long is logged (by the next log_long_pauses call): it is a visible share of a gate budget.
LOG_PAUSE_S = 0.05


def freeze_startup_objects() -> int:
    """Collect once, then exclude every object alive now from future collections; returns how many were frozen."""
    gc.collect()
    gc.freeze()
    # Unfrozen at exit, so interpreter shutdown finalizes them as usual (native extensions check for leaks then).
    atexit.register(gc.unfreeze)
    return gc.get_freeze_count()


class GCPauseWatch:
    """A ``gc.callbacks`` entry that hands each collection's duration to ``observe(generation, seconds)`` and keeps
    the long ones for :meth:`log_long_pauses`.

    It runs inside the collector, in whatever thread triggered it, possibly while that thread holds a lock:
    ``observe`` must not take a lock the rest of the program holds while allocating (the worker's observes a
    pre-created histogram child), and the callback does not log; a timer calls :meth:`log_long_pauses`."""

    def __init__(self, observe: Callable[[int, float], None]):
        self.observe = observe
        self.long_pauses: deque[tuple[int, float]] = deque(maxlen=64)
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        seconds = time.perf_counter() - self._started
        self._started = None
        self.observe(info["generation"], seconds)
        if seconds >= LOG_PAUSE_S:
            self.long_pauses.append((info["generation"], seconds))

    def log_long_pauses(self) -> int:
        """Log (and forget) the pauses of LOG_PAUSE_S or more since the last call; returns how many."""
        logged = 0
        while self.long_pauses:
            generation, seconds = self.long_pauses.popleft()
            log.warning("garbage collection (generation %d) stopped the worker for %.0f ms", generation, seconds * 1000)
            logged += 1
        return logged

    def install(self) -> GCPauseWatch:
        gc.callbacks.append(self)
        # Removed at exit: the interpreter's last collection is not a pause of a running worker.
        atexit.register(self.remove)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
