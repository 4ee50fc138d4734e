import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.kafka import topics
from streams.kafka.topics import TOPICS, declared_topics
from streams.settings import Settings


def _cli(*args, env=None, check=True):
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def test_topics_list_names_every_topic():
    out = _cli("topics", "list", "--topic-prefix", "plant9", env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}).stdout
    for spec in TOPICS:
        assert f"plant9.{spec.role}" in out
    assert "defectstream-worker-line-stats-10s-changelog" in out


def test_commands_without_a_cluster_say_how_to_get_one(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": ""}
    out = _cli("topics", "create", env=env, check=False)
    assert out.returncode != 0
    assert "defectstream broker start" in out.stderr
    status = _cli("broker", "status", env=env, check=False)
    assert status.returncode == 3 and "not running" in status.stdout


@pytest.mark.integration
def test_topics_create_via_cli(kafka):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    env["DEFECTSTREAM_APP_ID"] = "clitest-worker"
    first = _cli("topics", "create", "--topic-prefix", "clitest", env=env).stdout
    second = _cli("topics", "create", "--topic-prefix", "clitest", env=env).stdout
    declared = declared_topics(Settings(topic_prefix="clitest", app_id="clitest-worker"))
    assert len(declared) == len(TOPICS) + 2  # + the 10 s and 60 s line-stats changelogs
    assert first.count("created") == len(declared)
    assert second.count("exists") == len(declared)


@contextlib.contextmanager
def _running_cli(*args: str, env: dict[str, str], logs: Path):
    """The command in a child process, its output in files (an unread pipe could fill and block it); killed on the
    way out if a failed assertion left it running."""
    with open(logs / "out", "w") as out, open(logs / "err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args], env={**os.environ, **env}, stdout=out, stderr=err, text=True
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _group_members(admin, group: str) -> int:
    return len(admin.describe_consumer_groups([group])[group].result(timeout=10).members)


def _wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout_s: float = 60.0) -> None:
    def holds() -> bool:
        try:
            return condition()
        except (KafkaException, TimeoutError):  # a new topic without a leader yet, a coordinator still loading
            return False

    deadline = time.monotonic() + timeout_s
    while not holds():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the command exited early (returncode {proc.returncode})")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.2)


@pytest.mark.integration
def test_sigterm_stops_the_gate_in_order_and_it_leaves_its_group_at_once(kafka_settings, tmp_path):
    # Without an orderly close the group keeps the dead member until its session times out (10 s), and a
    # replacement gate on that line waits that long for its commands.
    admin = AdminClient({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers})
    group = f"{kafka_settings.app_id}-gate-line-sig"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "DEFECTSTREAM_APP_ID": kafka_settings.app_id,
    }
    args = ("gate", "--line", "line-sig", "--topic-prefix", kafka_settings.topic_prefix)
    with _running_cli(*args, env=env, logs=tmp_path) as gate:
        _wait_for(lambda: _group_members(admin, group) == 1, "the gate joined its group", gate)
        gate.send_signal(signal.SIGTERM)
        assert gate.wait(timeout=30) == 0, (tmp_path / "err").read_text()
    assert "line line-sig: 0 actuated" in (tmp_path / "out").read_text()
    _wait_for(lambda: _group_members(admin, group) == 0, "the gate left its group", timeout_s=3)


@pytest.mark.integration
def test_sigterm_stops_the_camera_with_every_sent_frame_delivered(kafka_settings, tmp_path):
    topic = kafka_settings.topic(topics.FRAMES)
    consumer = Consumer({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers, "group.id": "sig-count"})

    def frames_in_topic() -> int:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)

    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers}
    args = ("camera", "--frames", "100000", "--fps", "200", "--topic-prefix", kafka_settings.topic_prefix)
    try:
        with _running_cli(*args, env=env, logs=tmp_path) as camera:
            _wait_for(lambda: frames_in_topic() >= 50, "the camera's first frames arrived", camera)
            camera.send_signal(signal.SIGTERM)
            assert camera.wait(timeout=60) == 0, (tmp_path / "err").read_text()
        out = (tmp_path / "out").read_text()
        assert "[camera] stopped" in out
        summary = re.search(r"sent (\d+), delivered (\d+), failed (\d+)", out)
        assert summary, out
        sent, delivered, failed = map(int, summary.groups())
        assert 50 <= sent < 100000 and delivered == sent and failed == 0
        assert frames_in_topic() == sent
    finally:
        consumer.close()
