"""Log late or failed things (reject commands, frames, line counts) without flooding the log in a spell of them.

A worker that falls behind (a burst, a stalled broker) makes every command late at once, and a camera gateway cut off
from Kafka misses the deadline of every frame it takes, then, when librdkafka gives up, fails all of them at once:
one line each would be hundreds of lines a second, written exactly when the process has the least time to spare.
The counts are in the metrics and stats; the log names the first one of a spell at once and then sums the rest up,
at most once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 5.0

# Every spell log alive in this process, for flush_every_spell_log at its stop.
_alive: weakref.WeakSet[SpellLog] = weakref.WeakSet()


class SpellLog:
    """Thread-safe: the late or failing path calls :meth:`note`, a timer (or the next poll) calls :meth:`flush`.

    ``plural`` names what is late or failed in the summary line ("late commands"); each :meth:`note` says which one
    it is ("late reject command for part-7 on line-1") and, for late ones, how far past its deadline: the summary
    names the latest of them, or the one furthest past its deadline. Lines go to ``logger`` (the caller's, so its
    log settings apply) at ``level``."""

    def __init__(
        self,
        plural: str,
        interval_s: float = SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        level: int = logging.WARNING,
        logger: logging.Logger = log,
    ):
        self.plural = plural
        self.interval_s = interval_s
        self.level = level
        self._log = logger
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: float | None = None
        self._held = 0
        self._worst: tuple[float, str] | None = None  # ms past the deadline (or -inf), which one
        _alive.add(self)

    def note(self, what: str, ms_late: float | None = None) -> None:
        with self._lock:
            now = self._clock()
            if self._held == 0 and (self._last_logged is None or now - self._last_logged >= self.interval_s):
                self._last_logged = now
                self._log.log(self.level, "%s%s", what, _past_deadline(ms_late))
                return
            self._held += 1
            rank = float("-inf") if ms_late is None else ms_late
            if self._worst is None or rank >= self._worst[0]:
                self._worst = (rank, what)
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
        rank, what = self._worst
        late = rank != float("-inf")
        self._log.log(
            self.level,
            "%d more %s in the last %.0f s; the %s of them: %s%s",
            self._held,
            self.plural,
            now - self._last_logged,
            "worst" if late else "last",
            what,
            _past_deadline(rank if late else None, ", "),
        )
        self._last_logged, self._held, self._worst = now, 0, None


def flush_every_spell_log() -> int:
    """For a process's stop, once its work is done: log what every spell log still holds back. Otherwise the
    last seconds of a spell (late commands as a worker is stopped in a backlog) would be in no log line, and the
    metrics that count them end with the process. Returns how many were logged."""
    return sum(spell.flush() for spell in list(_alive))


def _past_deadline(ms_late: float | None, separator: str = ": ") -> str:
    return "" if ms_late is None else f"{separator}{ms_late:.0f} ms past its deadline"
