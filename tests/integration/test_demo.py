"""What `make demo` runs, against the session's broker (as with KAFKA_BOOTSTRAP_SERVERS set)."""

import pytest

from streams.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(kafka, base_settings):
    settings = base_settings.replace(kafka_bootstrap_servers=kafka.bootstrap)
    summary = run_demo(settings, frames=40, fps=40.0, timeout_s=120)
    assert summary.sent == summary.delivered == summary.classified == 40
    assert summary.gate_commands == summary.rejected_verdicts > 0
    assert summary.dead_letters == 0
    assert sum(summary.by_label.values()) == 40
