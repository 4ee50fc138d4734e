"""What `make demo` runs, against the session's broker (as with KAFKA_BOOTSTRAP_SERVERS set)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(kafka, base_settings):
    settings = base_settings.replace(kafka_bootstrap_servers=kafka.bootstrap)
    summary = run_demo(settings, frames=40, fps=40.0, timeout_s=120)
    assert summary.sent == summary.delivered == summary.classified == 40
    assert summary.gate_commands == summary.rejected_verdicts > 0
    assert summary.dead_letters == 0
    # The gate heard the worker's line heartbeats from the first frames on: no moment without a verdict in sight.
    assert summary.gate_silent_spells == 0
    assert sum(summary.by_label.values()) == 40


def test_sigterm_stops_the_demo_and_everything_it_started_with_143(kafka):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    argv = [sys.executable, "-m", "streams.cli", "demo", "--frames", "100000", "--fps", "20"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        try:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if "worker ready" in line:
                    break
            # The worker process the demo started (a daemon thread or two aside, its only child).
            children = (Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()).split()
            time.sleep(2)  # frames on their way through camera, worker and gate
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 143, "".join(lines) + out
    assert "[demo] stopped by SIGTERM; everything it started has been stopped" in out
    assert children, "the demo had no worker process running"
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "the demo left its worker running"
