"""Log late things (reject commands, frames) without flooding the log when a whole spell of them is late.

A worker that falls behind (a burst, a stalled broker) makes every command late at once, and a camera gateway cut off
from Kafka misses the deadline of every frame it takes: one warning each would be hundreds of lines a second, written
exactly when the process has the least time to spare. The counts are in the metrics and stats; the log names the
first one of a spell at once and then sums the rest up, at most once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 5.0


class LateLog:
    """Thread-safe: the late path calls :meth:`note`, a timer (or the next poll) calls :meth:`flush`.

    ``plural`` names what is late in the summary line ("late commands"); each :meth:`note` says which one it is
    ("late reject command for part-7 on line-1") and how far past its deadline."""

    def __init__(
        self, plural: str, interval_s: float = SUMMARY_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ):
        self.plural = plural
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: float | None = None
        self._held = 0
        self._worst: tuple[float, str] | None = None  # ms past the deadline, which one

    def note(self, what: str, ms_late: float) -> None:
        with self._lock:
            now = self._clock()
            if self._held == 0 and (self._last_logged is None or now - self._last_logged >= self.interval_s):
                self._last_logged = now
                log.warning("%s: %.0f ms past its deadline", what, ms_late)
                return
            self._held += 1
            if self._worst is None or ms_late > self._worst[0]:
                self._worst = (ms_late, what)
            if now - self._last_logged >= self.interval_s:
                self._log_held(now)

    def flush(self, *, only_if_due: bool = False) -> int:
        """Log the late ones held back since the last line, if any (``only_if_due``: only once the interval since
        that line is over); returns how many were logged."""
        with self._lock:
            held = self._held
            now = self._clock()
            if not held or (only_if_due and now - self._last_logged < self.interval_s):
                return 0
            self._log_held(now)
            return held

    def _log_held(self, now: float) -> None:
        ms_late, what = self._worst
        log.warning(
            "%d more %s in the last %.0f s; the worst of them: %s, %.0f ms past its deadline",
            self._held,
            self.plural,
            now - self._last_logged,
            what,
            ms_late,
        )
        self._last_logged, self._held, self._worst = now, 0, None
