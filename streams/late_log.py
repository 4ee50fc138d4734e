"""Log late reject commands without flooding the log when a worker falls behind.

A worker that falls behind (a burst, a stalled broker) makes every command late at once: one warning each would be
hundreds of lines a second, written by the decide stage exactly when it has the least time to spare. The count of
every late command is in the metrics (``defectstream_late_commands_total``); the log names the first one of a spell
at once and then sums the rest up, at most once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 5.0


class LateCommandLog:
    """Thread-safe: the decide stage notes commands, a worker timer calls :meth:`flush`."""

    def __init__(self, interval_s: float = SUMMARY_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: float | None = None
        self._held = 0
        self._worst: tuple[float, str, str, str] | None = None  # ms past the deadline, action, part, gate

    def note(self, action: str, part_id: str, gate: str, ms_late: float) -> None:
        with self._lock:
            now = self._clock()
            if self._held == 0 and (self._last_logged is None or now - self._last_logged >= self.interval_s):
                self._last_logged = now
                log.warning("late %s command for %s on %s: %.0f ms past its deadline", action, part_id, gate, ms_late)
                return
            self._held += 1
            if self._worst is None or ms_late > self._worst[0]:
                self._worst = (ms_late, action, part_id, gate)
            if now - self._last_logged >= self.interval_s:
                self._log_held(now)

    def flush(self) -> int:
        """Log the late commands held back since the last line, if any; returns how many there were."""
        with self._lock:
            held = self._held
            if held:
                self._log_held(self._clock())
            return held

    def _log_held(self, now: float) -> None:
        ms_late, action, part_id, gate = self._worst
        log.warning(
            "%d more late commands in the last %.0f s; the worst of them: %s for %s on %s, %.0f ms past its deadline",
            self._held,
            now - self._last_logged,
            action,
            part_id,
            gate,
            ms_late,
        )
        self._last_logged, self._held, self._worst = now, 0, None
