"""Shared fixtures. Kafka is real: the session starts the project's own broker, or uses KAFKA_BOOTSTRAP_SERVERS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka.broker import SCRAM_MECHANISM, SCRAM_USER, Cluster, kafka_cluster
from streams.kafka.topics import create_topics
from streams.settings import Settings


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # The shared cache (jars, the trained skeleton model) is reused; run state is per test session.
    return Settings.from_env()


@pytest.fixture(scope="session")
def kafka(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with kafka_cluster(base_settings, run_dir=tmp_path_factory.mktemp("broker")) as cluster:
        yield cluster


@pytest.fixture
def kafka_settings(kafka: Cluster, base_settings: Settings) -> Settings:
    """Settings for one test: the session's cluster, topics under a fresh prefix, a fresh consumer group."""
    run = uuid.uuid4().hex[:8]
    settings = base_settings.replace(
        kafka_bootstrap_servers=kafka.bootstrap, topic_prefix=f"test-{run}", app_id=f"test-worker-{run}"
    )
    create_topics(settings)
    return settings


@pytest.fixture
def scram_settings(kafka: Cluster, kafka_settings: Settings) -> Settings:
    """``kafka_settings`` over the local broker's SASL/SCRAM listener (topics were created over PLAINTEXT)."""
    if kafka.local is None or not kafka.local.sasl_bootstrap:
        pytest.skip("an external cluster (KAFKA_BOOTSTRAP_SERVERS) has no SCRAM listener known to the tests")
    return kafka_settings.replace(
        kafka_bootstrap_servers=kafka.local.sasl_bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=SCRAM_MECHANISM,
        kafka_sasl_username=SCRAM_USER,
        kafka_sasl_password=kafka.local.sasl_password,
    )


@pytest.fixture(scope="session")
def skeleton_model(base_settings: Settings) -> Path:
    from models.skeleton import ensure_skeleton_model

    return ensure_skeleton_model(base_settings.cache_dir)
