import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from streams.worker.loop_watch import EXIT_UNACKED, EventLoopWatchdog

ROOT = Path(__file__).resolve().parents[3]


class Stalls:
    def __init__(self):
        self.seen: list[tuple[float, str]] = []
        self.called = threading.Event()

    def __call__(self, silent_s: float, loop_stack: str) -> None:
        self.seen.append((silent_s, loop_stack))
        self.called.set()


def a_call_that_blocks_the_loop(seconds: float) -> None:
    threading.Event().wait(seconds)  # waits without the GIL, as a hung lock, socket or Future.result() would


def test_a_loop_blocked_by_a_call_is_reported_with_where_it_blocks():
    stalls = Stalls()
    watchdog = EventLoopWatchdog(0.5, on_stall=stalls)

    async def block():
        watchdog.start()
        await asyncio.sleep(0.2)
        a_call_that_blocks_the_loop(3.0)
        return stalls.called.is_set()

    reported_while_blocked = asyncio.run(block())
    assert reported_while_blocked  # from its own thread, while the loop was still blocked
    ((silent, stack),) = stalls.seen
    assert 0.5 < silent < 3.0
    assert "a_call_that_blocks_the_loop" in stack


def test_a_busy_loop_that_keeps_running_is_left_alone_and_the_watchdog_ends_with_the_loop():
    stalls = Stalls()
    watchdog = EventLoopWatchdog(1.0, on_stall=stalls)

    async def busy():
        thread = watchdog.start()
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            a_call_that_blocks_the_loop(0.05)  # short blocking steps, as batches' bookkeeping is
            await asyncio.sleep(0)
        return thread

    thread = asyncio.run(busy())
    thread.join(timeout=3)  # the loop is closed: it stops by itself
    assert not thread.is_alive()
    assert stalls.seen == []


def test_a_pause_of_the_whole_process_is_not_taken_for_a_blocked_loop():
    stalls = Stalls()
    skipped = [0.0]  # time the process did not run: the loop and the watchdog were both stopped
    watchdog = EventLoopWatchdog(1.0, on_stall=stalls, clock=lambda: time.monotonic() + skipped[0])

    async def paused():
        watchdog.start()
        await asyncio.sleep(0.4)
        skipped[0] += 5.0  # SIGSTOP, a paused container or VM
        await asyncio.sleep(1.0)

    asyncio.run(paused())
    assert stalls.seen == []


def test_the_worker_exits_unacked_even_when_logging_the_reason_blocks(tmp_path):
    # A handler that never returns, as a write to a full stderr pipe would not: the exit must not wait for it.
    child = textwrap.dedent(
        """
        import logging, threading
        from streams.worker import loop_watch

        class Stuck(logging.Handler):
            def emit(self, record):
                threading.Event().wait()

        logging.getLogger().addHandler(Stuck())
        loop_watch.EXIT_ANYWAY_AFTER_S = 0.5
        loop_watch.exit_unacked(31.0, "the loop's stack")
        """
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, timeout=30)
    assert done.returncode == EXIT_UNACKED
    assert time.monotonic() - started < 20


def test_a_loop_that_is_stopped_not_blocked_is_not_reported_and_a_stopped_watchdog_ends():
    stalls = Stalls()
    watchdog = EventLoopWatchdog(0.2, on_stall=stalls)
    loop = asyncio.new_event_loop()

    async def start():
        return watchdog.start()

    thread = loop.run_until_complete(start())
    time.sleep(0.6)  # the loop is open but does not run, as between the phases of Faust's shutdown
    assert thread.is_alive() and stalls.seen == []
    watchdog.stop()
    thread.join(timeout=2)
    assert not thread.is_alive()
    loop.close()
    assert stalls.seen == []


def test_no_limit_is_refused():
    with pytest.raises(ValueError, match="above 0"):
        EventLoopWatchdog(0)
