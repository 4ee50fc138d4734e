"""The event-loop watchdog: a thread that ends the worker when its asyncio event loop has stopped running.

The worker's other watchdogs (stage calls, fetches, consumer flow) are Faust timers: they run on the event loop, so a
call that blocks the loop stops them all, along with every batch. Faust's consumer meanwhile runs in a thread of its
own, where aiokafka keeps sending the group's heartbeats, so the worker keeps its partitions; only Faust's max poll
interval (``broker_max_poll_interval``, 1000 s) would move them. Their parts pass the gate without a verdict, while
the other workers' line heartbeats keep the gate content. Exiting unacked moves the partitions to a healthy worker,
which inspects the frames again (late: the gate decides, fail-safe), as the stage watchdog does.

What it catches: a call on the loop that waits without holding the GIL (a lock, a socket, a ``Future.result()``,
a sleep). A C call that hangs holding the GIL stops this thread too; only the supervisor's liveness probe sees that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)

EXIT_UNACKED = 75  # as the other watchdogs: the supervisor restarts the worker
EXIT_ANYWAY_AFTER_S = 5.0  # when logging the reason blocks


def exit_unacked(silent_s: float, loop_stack: str) -> None:
    # The exit must not wait for the log: the loop may be blocked in a log write itself (a full stderr pipe), and
    # this call would then wait for the same handler lock or pipe.
    threading.Timer(EXIT_ANYWAY_AFTER_S, os._exit, (EXIT_UNACKED,)).start()
    log.critical(
        "the event loop has not run for %.0f s (DEFECTSTREAM_LOOP_STALL_LIMIT_S); exiting unacked so another worker "
        "inspects this worker's frames. The loop's thread is at:\n%s",
        silent_s,
        loop_stack,
    )
    os._exit(EXIT_UNACKED)


class EventLoopWatchdog:
    """Asks the loop to run a callback at least once a second (every ``limit_s / 4`` for short limits), from a thread
    of its own, and calls ``on_stall(seconds, loop_stack)`` once the running loop has run none for ``limit_s``.

    - A loop that is not running (stopped, not blocked) is not watched.
    - When this thread itself has not run for half the limit, the whole process was paused (SIGSTOP, a paused
      container or VM) or starved of CPU, not the loop blocked: the loop gets a full limit from then on.
    - Started once the worker runs (after Faust's start-up and table recovery), so a loop blocked before that is not
      covered; it ends by itself when the loop is closed, or at :meth:`stop`."""

    def __init__(
        self,
        limit_s: float,
        *,
        on_stall: Callable[[float, str], None] = exit_unacked,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not limit_s > 0:
            raise ValueError(f"limit_s must be above 0 seconds, got {limit_s}")
        self.limit_s = limit_s
        self._on_stall = on_stall
        self._clock = clock
        self._stopped = threading.Event()
        self._last_run = clock()

    def start(self) -> threading.Thread:
        """Watch the running loop; call it on that loop."""
        loop = asyncio.get_running_loop()
        self._last_run = self._clock()
        thread = threading.Thread(
            target=self._watch, args=(loop, threading.get_ident()), name="loop-watchdog", daemon=True
        )
        thread.start()
        return thread

    def stop(self) -> None:
        self._stopped.set()

    def _ran(self) -> None:
        self._last_run = self._clock()

    def _watch(self, loop: asyncio.AbstractEventLoop, loop_thread: int) -> None:
        last_check = self._clock()
        while not self._stopped.wait(min(1.0, self.limit_s / 4)):
            now = self._clock()
            if now - last_check > self.limit_s / 2 or not loop.is_running():
                # Paused with the whole process, or the loop is stopped (between the phases of Faust's shutdown, and
                # after it until the loop is closed: the output producer's final flush in app.run_worker).
                self._last_run = now
            last_check = now
            if loop.is_closed():  # the worker has stopped
                return
            silent = now - self._last_run
            if silent > self.limit_s:
                frame = sys._current_frames().get(loop_thread)
                self._on_stall(silent, "".join(traceback.format_stack(frame)) if frame else "(thread gone)")
                return
            try:
                loop.call_soon_threadsafe(self._ran)
            except RuntimeError:  # closed meanwhile
                return
