import os
import subprocess
import sys

import pytest

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
