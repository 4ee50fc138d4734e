"""docker-compose.yml (+ docker-compose.gpu.yml) rendered by the real `docker compose config`, then checked.

No Docker engine runs here: `config` validates and renders the files (schema, interpolation, merges, overrides);
building the images and starting the stack needs an engine (deploy/README.md says which checks ran where).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.kafka import topics
from streams.kafka.config import MAX_MESSAGE_BYTES
from tests.deploy.checks import ROOT, env_file_keys, unknown_settings

BASE = ["docker-compose.yml"]
GPU = ["docker-compose.yml", "docker-compose.gpu.yml"]


def render(compose: list[str], env: dict[str, str], files: list[str]) -> dict:
    args = [*compose, "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", f]
    proc = subprocess.run(
        [*args, "config", "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"docker compose config failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


def our_services(config: dict) -> dict[str, dict]:
    """Services that run this project's images (built from deploy/docker/), i.e. read streams.settings."""
    return {
        name: svc
        for name, svc in config["services"].items()
        if svc.get("build", {}).get("dockerfile", "").startswith("deploy/docker/")
    }


@pytest.fixture(scope="module", params=[BASE, GPU], ids=["cpu", "gpu"])
def config(request, compose, compose_env) -> dict:
    return render(compose, compose_env, request.param)


def test_config_renders_with_every_service(config):
    expected = {"kafka", "topic-init", "worker", "camera", "gate", "dataset-sink", "kafka-exporter", "prometheus"}
    assert expected | {"grafana"} <= set(config["services"])


def test_every_environment_variable_of_our_services_is_a_setting(config):
    for name, svc in our_services(config).items():
        assert unknown_settings(svc.get("environment", {})) == [], name


def test_credentials_example_and_image_env_name_only_settings():
    assert unknown_settings(env_file_keys(ROOT / "deploy/compose/kafka-credentials.env.example")) == []
    for dockerfile in (ROOT / "deploy/docker").glob("*.Dockerfile"):
        names = re.findall(r"\b((?:DEFECTSTREAM|KAFKA)_[A-Z0-9_]+)=", dockerfile.read_text())
        assert unknown_settings(names) == [], dockerfile.name


def test_a_misspelt_setting_is_caught(compose, compose_env, tmp_path):
    # The check above must be able to fail: render the real file with an override that adds a typo.
    override = tmp_path / "typo.yml"
    override.write_text(yaml.safe_dump({"services": {"worker": {"environment": {"DEFECTSTREAM_MAXBATCH": "4"}}}}))
    config = render(compose, compose_env, [*BASE, str(override)])
    assert unknown_settings(config["services"]["worker"]["environment"]) == ["DEFECTSTREAM_MAXBATCH"]


def test_images_are_pinned_and_builds_exist(config):
    for name, svc in config["services"].items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else None
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
        if "build" in svc:
            dockerfile = ROOT / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), name
            target = svc["build"].get("target")
            assert target is None or re.search(rf"^FROM .+ AS {target}$", dockerfile.read_text(), re.M), name
    assert config["services"]["kafka"]["image"].startswith("apache/kafka:")


def test_worker_scales_out(config):
    worker = config["services"]["worker"]
    # A published host port would make the second replica fail to start.
    assert "ports" not in worker
    assert worker["environment"]["DEFECTSTREAM_MODEL_PATH"].startswith("/models/")
    # SIGTERM lets the batch in flight finish and deliver: the grace period must be far longer than one batch.
    assert _seconds(worker["stop_grace_period"]) >= 30
    # Workers share the consumer group: there is room for as many as the frames topic has partitions.
    assert topics.topic_spec(topics.FRAMES).partitions >= 6


def _seconds(duration: str) -> float:
    """A Go duration as compose renders it (e.g. 1m0s) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|h|m|s)", duration))


def test_gpu_override_asks_for_an_nvidia_gpu(compose, compose_env):
    worker = render(compose, compose_env, GPU)["services"]["worker"]
    assert worker["build"]["target"] == "worker-cuda" and worker["image"].endswith("-cuda")
    assert worker["environment"]["DEFECTSTREAM_DEVICE"] == "cuda"
    assert int(worker["environment"]["DEFECTSTREAM_DECODE_THREADS"]) == 2  # one cannot feed a GPU
    assert int(worker["environment"]["DEFECTSTREAM_MAX_BATCHES_IN_FLIGHT"]) == 8  # two per stage thread: none waits
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    cpu = render(compose, compose_env, BASE)["services"]["worker"]
    assert cpu["build"]["target"] == "worker-cpu" and "deploy" not in cpu


def test_clients_run_hardened_and_start_after_topic_creation(config):
    for name, svc in our_services(config).items():
        assert svc.get("read_only") is True, name
        assert "ALL" in svc.get("cap_drop", []), name
        if name != "topic-init":
            assert svc["depends_on"]["topic-init"]["condition"] == "service_completed_successfully", name
    assert config["services"]["topic-init"]["command"] == ["topics", "create"]


def test_broker_is_kraft_with_the_frame_size_limits(config):
    env = config["services"]["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) == MAX_MESSAGE_BYTES == int(env["KAFKA_REPLICA_FETCH_MAX_BYTES"])


def test_prometheus_scrapes_the_ports_the_services_serve(config):
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    worker_port = int(config["services"]["worker"]["environment"]["DEFECTSTREAM_WEB_PORT"])
    assert jobs["worker"]["dns_sd_configs"][0] == {**jobs["worker"]["dns_sd_configs"][0], "port": worker_port}
    gate_cmd = config["services"]["gate"]["command"]
    gate_port = gate_cmd[gate_cmd.index("--metrics-port") + 1]
    assert jobs["gate"]["static_configs"][0]["targets"] == [f"gate:{gate_port}"]
    # Bind-mounted configuration comes from the repository, so it must be there.
    for name, svc in config["services"].items():
        for volume in svc.get("volumes", []):
            if volume["type"] == "bind" and "/deploy/" in volume["source"]:
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"
