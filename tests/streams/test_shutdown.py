"""SIGTERM handlers, each in a fresh interpreter as the commands run: the test process itself holds threads of
native libraries (OpenVINO, librdkafka) and once crashed when it signalled itself after the engine tests."""

import subprocess
import sys

import pytest

SCRIPT = """
import os, signal, sys, time
from streams.shutdown import exit_status, interrupt, on_sigterm, stop_event_on_sigterm, stopped_by_sigterm

def sigterm_self():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # the handler runs in the main thread at the next bytecode

case = sys.argv[1]
if case == "once":
    calls = []
    on_sigterm(lambda: calls.append(1))
    sigterm_self()
    sigterm_self()  # would end this process if it were not ignored
    print("calls", len(calls))
elif case == "interrupt":
    on_sigterm(interrupt)
    try:
        sigterm_self()
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
elif case == "swallowed":
    on_sigterm(interrupt)
    print("before", stopped_by_sigterm())
    try:
        try:
            sigterm_self()
        except KeyboardInterrupt as stop:
            print("status", exit_status(stop))
            raise RuntimeError("conversion failed") from None  # as a library that wraps what it caught
    except RuntimeError:
        print("after", stopped_by_sigterm())
    print("ctrl-c", exit_status(KeyboardInterrupt()))
elif case == "event":
    stop = stop_event_on_sigterm()
    print("before", stop.is_set())
    sigterm_self()
    print("after", stop.is_set())
"""


def _run(case: str) -> str:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.parametrize(
    ("case", "printed"),
    [
        ("once", ["calls", "1"]),  # the first SIGTERM runs the action, later ones are ignored
        ("interrupt", ["interrupted"]),  # as Ctrl-C: through finally blocks and except KeyboardInterrupt
        ("event", ["before", "False", "after", "True"]),
        # A library that turns the stop into its own error cannot hide it; SIGTERM is 143, Ctrl-C 130.
        ("swallowed", ["before", "False", "status", "143", "after", "True", "ctrl-c", "130"]),
    ],
)
def test_sigterm_handlers(case, printed):
    assert _run(case) == printed


EXIT_SCRIPT = """
import logging, sys, threading
from streams.shutdown import exit_anyway_after

logging.basicConfig(level=logging.INFO)
if sys.argv[1] == "hung":
    threading.Thread(target=threading.Event().wait, name="infer_0").start()  # never returns, never a daemon
exit_anyway_after(float(sys.argv[2]), 3)
print("stopped", flush=True)
"""


def test_a_thread_that_never_ends_does_not_keep_the_process_alive():
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, "hung", "0.5"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.split() == ["stopped"]
    assert "threads still running 0.5 s after the stop: ['infer_0']; exiting without them" in proc.stderr


def test_without_such_a_thread_the_process_exits_as_usual_at_once():
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, "clean", "60"], capture_output=True, text=True, timeout=30
    )
    assert (proc.returncode, proc.stdout.split(), proc.stderr) == (0, ["stopped"], "")
