"""The Grafana dashboard and the alert rules read only metrics that really exist.

The names are checked against the /metrics of a real worker and a real reject gate, both running against the
session's Kafka broker, plus a short allow-list of external metrics with the exporter that provides each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from streams.kafka.broker import free_port
from streams.worker.process import WorkerProcess
from tests.deploy.checks import ROOT
from tests.deploy.metric_names import (
    EXTERNAL_METRICS,
    exposed_series_names,
    grafana_query_metric_names,
    promql_metric_names,
)

DASHBOARD = ROOT / "deploy/grafana/dashboards/defectstream.json"
RULES = sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queried_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is read (panel title, variable or alert), over the dashboard and every rule file."""
    where: dict[str, set[str]] = {}
    board = dashboard()
    for panel in board["panels"]:
        for target in panel["targets"]:
            for name in promql_metric_names(target["expr"]):
                where.setdefault(name, set()).add(f"panel {panel['title']!r}")
    for variable in board["templating"]["list"]:
        for name in grafana_query_metric_names(variable["query"]["query"]):
            where.setdefault(name, set()).add(f"variable ${variable['name']}")
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for name in promql_metric_names(rule["expr"]):
                    where.setdefault(name, set()).add(f"alert {rule.get('alert') or rule.get('record')}")
    return where


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (line) (rate(defectstream_frames_total{line=~"$line"}[$__rate_interval]))',
            {"defectstream_frames_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le, line) (rate(a_seconds_bucket[5m]))) > 1e3 * b_total offset 1h",
            {"a_seconds_bucket", "b_total"},
        ),
        ('absent(up{job="worker"} == 1) and on (instance) c{x="sum(y)"} unless d[1h:1m]', {"up", "c", "d"}),
        ("count by (model_version, engine) (defectstream_model_info)", {"defectstream_model_info"}),
    ],
)
def test_promql_metric_names(expr, names):
    assert promql_metric_names(expr) == names


def test_grafana_label_values_query():
    assert grafana_query_metric_names("label_values(defectstream_frames_total, line)") == {"defectstream_frames_total"}
    assert grafana_query_metric_names("label_values(line)") == set()


def test_dashboard_is_provisioned_and_covers_the_pipeline():
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(p["targets"] for p in board["panels"])
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in board["panels"]} == {uid}
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/defectstream.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for topic in [
        "throughput by line",
        "decisions",
        "defect rate",
        "capture to gate latency",
        "queue wait vs compute",
        "batch size",
        "consumer lag",
        "late commands",
        "dead letters",
        "retraining samples",
        "model version",
    ]:
        assert topic in titles
    latency = next(p for p in board["panels"] if p["title"] == "Capture to gate latency")
    assert {"histogram_quantile(0.5,", "histogram_quantile(0.99,"} <= {t["expr"].split()[0] for t in latency["targets"]}


def _wait_for_metrics(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    raise TimeoutError(url)


@pytest.mark.integration
def test_every_queried_metric_is_exported_by_the_real_services(kafka_settings, skeleton_model, tmp_path):
    settings = kafka_settings.replace(model_path=skeleton_model, web_port=free_port(), inference_threads=1)
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready()
        with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as resp:
            exported = exposed_series_names(resp.read().decode())
    # The gate as `defectstream gate --metrics-port` serves it in production.
    port = free_port()
    gate = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "gate", "--metrics-port", str(port), "--duration", "120"],
        env={**os.environ, **settings.to_env()},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        exported |= exposed_series_names(_wait_for_metrics(f"http://127.0.0.1:{port}/metrics", gate))
    finally:
        gate.send_signal(signal.SIGINT)
        try:
            gate.wait(60)
        except subprocess.TimeoutExpired:  # a starved machine can be slow to stop it; metric names are the subject
            gate.kill()
            gate.wait(10)

    assert {"defectstream_frames_total", "defectstream_gate_commands_total"} <= exported  # both really answered
    queried = queried_metrics()
    unknown = {name: sorted(where) for name, where in queried.items() if name not in exported | set(EXTERNAL_METRICS)}
    assert unknown == {}, "queried but exported by nothing (worker, gate, or the external allow-list)"
    # Every external metric in the allow-list is used, and comes from a service that the compose stack runs.
    assert set(EXTERNAL_METRICS) <= set(queried)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "kafka-exporter" in compose["services"] and "prometheus" in compose["services"]
