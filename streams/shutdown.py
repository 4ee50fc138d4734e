"""SIGTERM as an orderly stop.

`docker stop`, Kubernetes and systemd stop a process with SIGTERM, whose default ends Python without running a
``finally`` (and a container's PID 1 ignores it until the SIGKILL that follows). Commands that own resources (a
producer with frames in flight, a consumer in a group, a broker they started) install one of these instead.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def on_sigterm(action: Callable[[], None]) -> None:
    """Run ``action`` on the first SIGTERM; later ones are ignored, so that they cannot cut the stop short."""

    def handler(_signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        action()

    signal.signal(signal.SIGTERM, handler)


class Terminated(KeyboardInterrupt):
    """What :func:`interrupt` raises: handled as Ctrl-C, but :func:`exit_status` can still tell which signal it was."""


_sigterm_received = threading.Event()


def interrupt() -> None:
    """For ``on_sigterm``: stop as on Ctrl-C, through the ``finally`` blocks and ``except KeyboardInterrupt``."""
    _sigterm_received.set()
    raise Terminated


def stopped_by_sigterm() -> bool:
    """Whether :func:`interrupt` ran. A library may catch the exception and raise one of its own instead (OpenVINO's
    model conversion reports a SIGTERM during tracing as a failed conversion): the command still stopped for it."""
    return _sigterm_received.is_set()


def exit_status(stop: KeyboardInterrupt) -> int:
    """The status for a command that a signal stopped before it finished, as a shell reports one the signal ended:
    143 for SIGTERM, 130 for Ctrl-C. Supervisors then see an interrupted run as not done, and why."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def stop_event_on_sigterm() -> threading.Event:
    """An event the first SIGTERM sets, for loops that check one between units of work: nothing is raised inside
    a Kafka client call, so a send or a flush in progress completes."""
    stop = threading.Event()
    on_sigterm(stop.set)
    return stop


def exit_anyway_after(seconds: float, status: int) -> None:
    """For a command whose orderly stop is done (final commit made, outputs flushed). Python's exit waits for every
    non-daemon thread and every concurrent.futures pool thread, and one that never returns (a hung model or driver
    call, on a hot reload's inference threads) would keep the process alive until the supervisor's SIGKILL. Past
    ``seconds``, this logs the threads still running and exits with ``status``. A daemon thread: it never holds up
    an exit itself."""

    def exit_anyway() -> None:
        time.sleep(seconds)
        # Daemon threads too: a pool's threads inherit the flag from the thread that started them, and exiting
        # waits for a concurrent.futures pool's threads whatever the flag.
        running = [
            t.name for t in threading.enumerate() if t not in (threading.main_thread(), threading.current_thread())
        ]
        log.error("threads still running %g s after the stop: %s; exiting without them", seconds, running)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(status)

    threading.Thread(target=exit_anyway, name="exit-anyway", daemon=True).start()
