"""Prometheus configuration and alert rules, checked and unit-tested by the real promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.checks import ROOT

PROMETHEUS = ROOT / "deploy/prometheus"


def promtool_run(promtool: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_config_is_valid(promtool):
    proc = promtool_run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout  # the rule glob really matched the rules file


def test_rules_are_valid(promtool):
    rules = sorted((PROMETHEUS / "rules").glob("*.yml"))
    assert rules
    proc = promtool_run(promtool, "check", "rules", *map(str, rules))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_fire_on_the_input_they_are_meant_for(promtool):
    proc = promtool_run(promtool, "test", "rules", str(PROMETHEUS / "tests/defectstream.test.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rejects_a_broken_rule(promtool, tmp_path):
    # The checks above must be able to fail: a rule with a PromQL syntax error.
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum by (line (up)\n")
    proc = promtool_run(promtool, "check", "rules", str(broken))
    assert proc.returncode != 0 and "parse error" in (proc.stdout + proc.stderr)
