"""ExitOnStopSignals, in fresh interpreters: a signal runs the cleanup and ends the process at once, except inside
``finishing()``, after which the work completes."""

import subprocess
import sys

SCRIPT = """
import os, signal, sys, time
from models.stop_signals import ExitOnStopSignals

def signal_self(signum):
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs in the main thread at the next bytecode

with ExitOnStopSignals(lambda: print("cleanup", flush=True), "job") as stop:
    if sys.argv[1] == "finishing":
        stop.finishing()
        signal_self(signal.SIGTERM)
        print("renamed", flush=True)
    else:
        try:
            signal_self(getattr(signal, sys.argv[1]))
        finally:
            print("finally", flush=True)  # skipped: no exception is raised into what runs
print("done", flush=True)
"""


def _run(case: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, timeout=60)


def test_a_signal_cleans_up_and_exits_with_128_plus_its_number():
    for case, status in (("SIGTERM", 143), ("SIGINT", 130)):
        proc = _run(case)
        assert proc.returncode == status, proc.stderr
        assert proc.stdout.split() == ["cleanup"]
        assert f"job: stopped by {case} before it finished" in proc.stderr


def test_once_finishing_a_signal_no_longer_stops_the_work():
    proc = _run("finishing")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["renamed", "done"]
    assert "job: SIGTERM while putting the result in place; finishing" in proc.stderr
