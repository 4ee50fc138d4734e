"""Configuration of every Kafka client the project creates, in one place.

Edge clients (camera gateway, reject gate, dataset sink) and the worker's output producer use confluent-kafka; the
worker's consumer and table changelogs use Faust (aiokafka), configured in :mod:`streams.worker.app` from the same
settings. Security (SASL/SCRAM, TLS) is one function for both:
:func:`security_config` for librdkafka, :func:`faust_broker_credentials` for Faust.
"""

from __future__ import annotations

import ssl
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

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What both librdkafka and aiokafka (the worker's Faust client) implement; GSSAPI/OAUTHBEARER would need more set-up.
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


def security_config(settings: Settings) -> dict[str, Any]:
    """librdkafka security properties from the settings; empty for PLAINTEXT, so the defaults stay untouched.

    A half-configured combination is an error, not a fallback: credentials or certificates that the protocol would
    ignore mean the operator expected a protection the connection would silently lack."""
    protocol = settings.kafka_security_protocol.strip().upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(
            f"{Settings.env_name('kafka_security_protocol')}={settings.kafka_security_protocol!r}: "
            f"expected one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    given = {
        name
        for name in (
            "kafka_sasl_username",
            "kafka_sasl_password",
            "kafka_ssl_ca_location",
            "kafka_ssl_certificate_location",
            "kafka_ssl_key_location",
        )
        if getattr(settings, name)
    }
    unused = sorted(
        n for n in given if (n.startswith("kafka_sasl_") and not sasl) or (n.startswith("kafka_ssl_") and not tls)
    )
    if unused:
        raise ValueError(
            f"{', '.join(Settings.env_name(n) for n in unused)} set, but security protocol {protocol} does not use "
            f"{'it' if len(unused) == 1 else 'them'}: set {Settings.env_name('kafka_security_protocol')} accordingly"
        )
    config: dict[str, Any] = {}
    if protocol == "PLAINTEXT":
        return config
    config["security.protocol"] = protocol
    if sasl:
        mechanism = settings.kafka_sasl_mechanism.strip().upper()
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"{Settings.env_name('kafka_sasl_mechanism')}={settings.kafka_sasl_mechanism!r}: "
                f"expected one of {', '.join(SASL_MECHANISMS)}"
            )
        missing = [Settings.env_name(n) for n in ("kafka_sasl_username", "kafka_sasl_password") if n not in given]
        if missing:
            raise ValueError(f"security protocol {protocol} needs {' and '.join(missing)}")
        config.update(
            {
                "sasl.mechanism": mechanism,
                "sasl.username": settings.kafka_sasl_username,
                "sasl.password": settings.kafka_sasl_password,
            }
        )
    if tls:
        if ("kafka_ssl_certificate_location" in given) != ("kafka_ssl_key_location" in given):
            raise ValueError(
                f"mutual TLS needs both {Settings.env_name('kafka_ssl_certificate_location')} and "
                f"{Settings.env_name('kafka_ssl_key_location')}"
            )
        # Without a CA file, librdkafka looks for the system's CA bundle ("probe"), as Python's ssl does for Faust.
        config["ssl.ca.location"] = "probe"
        for name, key in (
            ("kafka_ssl_ca_location", "ssl.ca.location"),
            ("kafka_ssl_certificate_location", "ssl.certificate.location"),
            ("kafka_ssl_key_location", "ssl.key.location"),
        ):
            if name in given:
                config[key] = str(getattr(settings, name))
    return config


def faust_broker_credentials(settings: Settings) -> Any | None:
    """The same security settings as Faust's ``broker_credentials`` (aiokafka); None for PLAINTEXT.

    Faust is imported here, not at module level: the edge clients' image ships confluent-kafka only."""
    config = security_config(settings)
    protocol = config.get("security.protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return None
    import faust

    context = None
    if protocol.endswith("SSL"):
        ca = settings.kafka_ssl_ca_location
        context = ssl.create_default_context(cafile=str(ca) if ca else None)  # None: the system's CA bundle
        if "ssl.certificate.location" in config:
            context.load_cert_chain(config["ssl.certificate.location"], config["ssl.key.location"])
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=config["sasl.username"],
            password=config["sasl.password"],
            mechanism=config["sasl.mechanism"],
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def admin_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap(settings), "log_level": CLIENT_LOG_LEVEL, **security_config(settings)}


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
        **security_config(settings),
    }
    config.update(extra)
    return config


def worker_output_config(settings: Settings, delivery_timeout_s: float) -> dict[str, Any]:
    """The worker's output producer (:mod:`streams.kafka.output_producer`)."""
    return producer_config(
        settings,
        # A batch's records are produced one after another within ~0.3 ms. With no linger, librdkafka sent the first
        # of them at once and the rest in further requests: 4.7 produce requests per batch of 8 in e2e bursts (2.3 for
        # the reject commands alone), against 3.0 (one per partition: librdkafka puts one partition in a request)
        # with this linger. Half a millisecond on each verdict, against a 200 ms budget.
        **{"linger.ms": 0.5},
        # Java's (and aiokafka's) partitioner, not librdkafka's CRC32 default: a line's results and dead letters
        # land on the partitions any Kafka client, or a worker of an earlier version, would put them on (the
        # line-stats tables are partitioned the same way).
        partitioner="murmur2_random",
        # How long librdkafka retries a record before reporting it failed; the worker passes a little less than its
        # own delivery deadline, after which it gives up on the batch (unacked).
        **{"message.timeout.ms": int(delivery_timeout_s * 1000)},
    )


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap(settings),
        "log_level": CLIENT_LOG_LEVEL,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        # Long poll: the broker answers a fetch as soon as one byte is there (fetch.min.bytes=1), so once a consumer
        # fetches its partitions the wait bounds only empty fetches. 10 ms made each idle consumer ask ~100 times a
        # second: three idle ones cost the local broker ~7% of a core more than at 500 ms. But a partition assigned
        # while a fetch is in flight joins the next fetch only (up to this wait later): the reject gate, on the
        # reject path, polls briefly (gate_consumer_config).
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 500,
        "fetch.max.bytes": MAX_MESSAGE_BYTES * 2,
        "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        **security_config(settings),
    }
    config.update(extra)
    return config


# The gate's fetch wait: how late a partition that becomes fetchable while a fetch is in flight is fetched (librdkafka
# adds it to the next fetch only). With 500 ms, `make demo` had the first 3-4 commands of a fresh gate miss their
# deadline (22-143 ms late, 2 runs of 2): its partitions were assigned one after another while the first fetch was
# waiting. 10 ms fixed that but made the gate ask ~100 times a second, idle or not: 3.7 fetches per batch of commands
# in e2e bursts, the broker's most frequent request. 50 ms keeps that start-up delay far inside the deadline budget
# and answers a batch's commands with ~1.2 fetches (idle: ~20 a second).
GATE_FETCH_WAIT_MS = 50


def gate_consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    """The reject gate's consumer: offsets stored only once a command is acknowledged, and short polls, so a
    partition it is given (start, rebalance) is fetched within ~10 ms rather than after an empty long poll."""
    return consumer_config(
        settings, group_id, **{"enable.auto.offset.store": False, "fetch.wait.max.ms": GATE_FETCH_WAIT_MS}
    )
