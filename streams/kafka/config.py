"""Configuration of every Kafka client the project creates, in one place.

Edge clients (camera gateway, reject gate, dataset sink) use confluent-kafka; the worker uses Faust (aiokafka),
configured in :mod:`streams.worker.app` from the same settings.
"""

from __future__ import annotations

from typing import Any

from streams.settings import Settings

# Camera frames are up to a few MB (a 5 MP JPEG is ~2-4 MB). Every size limit on the path is set to this.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


def bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise RuntimeError(
            "no Kafka cluster configured: set KAFKA_BOOTSTRAP_SERVERS or start the local broker "
            "(`defectstream broker start`)"
        )
    return settings.kafka_bootstrap_servers


# librdkafka logs connection chatter at INFO (6); warnings and errors (<= 4) still reach stderr.
CLIENT_LOG_LEVEL = 4


def admin_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap(settings), "log_level": CLIENT_LOG_LEVEL}


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap(settings),
        "log_level": CLIENT_LOG_LEVEL,
        # Idempotence gives ordered, non-duplicated retries per partition; acks=all is implied by it.
        "enable.idempotence": True,
        # Frames must not wait for batch-mates: latency, not throughput, is the camera's constraint.
        "linger.ms": 1,
        # A little below the broker's limit, which counts batch and header overhead too: a frame the producer
        # accepts is one the broker accepts.
        "message.max.bytes": MAX_MESSAGE_BYTES - 64 * 1024,
        "compression.type": "none",  # JPEG/PNG do not compress further; spending CPU on it only adds latency.
    }
    config.update(extra)
    return config


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap(settings),
        "log_level": CLIENT_LOG_LEVEL,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        # Return as soon as one record is there; the default 500 ms would sit on the reject path.
        "fetch.wait.max.ms": 10,
        "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
        "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
    }
    config.update(extra)
    return config
