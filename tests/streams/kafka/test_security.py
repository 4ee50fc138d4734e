"""Kafka client security settings: env -> librdkafka properties and Faust credentials, refusals of half-set-ups, and
SCRAM against the local broker's SASL listener."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.kafka import topics
from streams.kafka.broker import SCRAM_MECHANISM
from streams.kafka.config import (
    admin_config,
    consumer_config,
    faust_broker_credentials,
    producer_config,
    security_config,
)
from streams.settings import Settings

SCRAM_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "DEFECTSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "DEFECTSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "DEFECTSTREAM_KAFKA_SASL_USERNAME": "inspector",
    "DEFECTSTREAM_KAFKA_SASL_PASSWORD": "not-a-real-secret",
}


def test_plaintext_adds_nothing_to_client_configs():
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert security_config(settings) == {}
    assert faust_broker_credentials(settings) is None
    assert "security.protocol" not in producer_config(settings)


def test_sasl_scram_reaches_every_confluent_client():
    settings = Settings.from_env(SCRAM_ENV)
    expected = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "inspector",
        "sasl.password": "not-a-real-secret",
    }
    for config in (admin_config(settings), producer_config(settings), consumer_config(settings, "g")):
        assert expected.items() <= config.items()
    # No CA file given: the system's CA bundle, not librdkafka's build-time default.
    assert security_config(settings)["ssl.ca.location"] == "probe"
    _librdkafka_accepts(settings)


def _librdkafka_accepts(settings: Settings) -> None:
    """librdkafka checks every property name and value (and loads certificate files) when a client is created."""
    quiet = {"log_level": 0}  # nothing listens at the bootstrap address; the connection errors are expected
    Producer(producer_config(settings, **quiet))
    Consumer(consumer_config(settings, "g", **quiet)).close()
    AdminClient({**admin_config(settings), **quiet})


def test_password_stays_out_of_the_settings_repr():
    assert "not-a-real-secret" not in repr(Settings.from_env(SCRAM_ENV))


def test_sasl_ssl_gives_faust_scram_credentials_with_tls():
    creds = faust_broker_credentials(Settings.from_env(SCRAM_ENV))
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "inspector",
        "not-a-real-secret",
        "SCRAM-SHA-512",
    )
    assert creds.protocol.value == "SASL_SSL" and isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED and creds.ssl_context.check_hostname


def test_sasl_plaintext_gives_faust_credentials_without_tls():
    env = {**SCRAM_ENV, "DEFECTSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext"}
    creds = faust_broker_credentials(Settings.from_env(env))
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test"]
    subprocess.run([*request, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_mutual_tls_files_reach_librdkafka_and_faust(tmp_path):
    cert, key = _self_signed(tmp_path)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "DEFECTSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "DEFECTSTREAM_KAFKA_SSL_CA_LOCATION": str(cert),
        "DEFECTSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION": str(cert),
        "DEFECTSTREAM_KAFKA_SSL_KEY_LOCATION": str(key),
    }
    settings = Settings.from_env(env)
    assert security_config(settings) == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(cert),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
    }
    _librdkafka_accepts(settings)
    creds = faust_broker_credentials(settings)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"
    # The CA file was really loaded into the context (a wrong path would have raised).
    assert creds.context.cert_store_stats()["x509_ca"] == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEFECTSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL"}, "expected one of PLAINTEXT"),
        ({"DEFECTSTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "expected one of SCRAM-SHA-256"),
        ({"DEFECTSTREAM_KAFKA_SASL_PASSWORD": ""}, "needs DEFECTSTREAM_KAFKA_SASL_PASSWORD"),
        # Credentials the protocol would ignore: the operator expected protection the connection would lack.
        ({"DEFECTSTREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "DEFECTSTREAM_KAFKA_SASL_PASSWORD, "),
        ({"DEFECTSTREAM_KAFKA_SSL_KEY_LOCATION": "/run/secrets/key.pem"}, "mutual TLS needs both"),
        (
            {"DEFECTSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DEFECTSTREAM_KAFKA_SSL_CA_LOCATION": "/ca.pem"},
            "DEFECTSTREAM_KAFKA_SSL_CA_LOCATION set, but security protocol SASL_PLAINTEXT does not use it",
        ),
    ],
)
def test_half_configured_security_is_refused(env, message):
    settings = Settings.from_env({**SCRAM_ENV, **env})
    with pytest.raises(ValueError, match=message):
        security_config(settings)
    with pytest.raises(ValueError, match=message):
        faust_broker_credentials(settings)


@pytest.mark.integration
def test_scram_settings_authenticate_against_a_real_broker(scram_settings):
    """The local broker's SASL/SCRAM listener: confluent-kafka and aiokafka (as Faust drives it) both get in with the
    settings' credentials, and a wrong password is refused."""
    scram = scram_settings
    topic = scram.topic(topics.RESULTS)  # created (over PLAINTEXT) by the kafka_settings fixture
    producer = Producer(producer_config(scram))
    delivered = []
    producer.produce(topic, key=b"line-1", value=b"confluent", on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(30) == 0 and delivered == [None]

    async def send_as_faust_would() -> None:
        auth = credentials_to_aiokafka_auth(faust_broker_credentials(scram))
        assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == SCRAM_MECHANISM
        aio = AIOKafkaProducer(bootstrap_servers=scram.kafka_bootstrap_servers, **auth)
        await aio.start()
        try:
            await aio.send_and_wait(topic, b"aiokafka", key=b"line-1")
        finally:
            await aio.stop()

    asyncio.run(send_as_faust_would())

    consumer = Consumer(consumer_config(scram, f"security-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    values, deadline = [], time.monotonic() + 30
    while len(values) < 2 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            values.append(msg.value())
    consumer.close()
    assert sorted(values) == [b"aiokafka", b"confluent"]

    errors = []
    wrong = AdminClient(
        {**admin_config(scram.replace(kafka_sasl_password="not-the-password")), "error_cb": errors.append}
    )
    with pytest.raises(KafkaException):
        wrong.list_topics(timeout=10)
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        wrong.poll(0.5)  # error_cb is served from poll()
    assert KafkaError._AUTHENTICATION in {e.code() for e in errors}
