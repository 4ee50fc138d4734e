import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.kafka.config import MAX_MESSAGE_BYTES, consumer_config, producer_config
from streams.kafka.reader import TopicReader
from streams.kafka.topics import FRAMES, TOPICS, changelog_topics, create_topics, declared_topics, topic_problems

pytestmark = pytest.mark.integration


def test_every_role_is_declared_once():
    roles = [t.role for t in TOPICS]
    assert sorted(roles) == sorted(
        {
            "frames",
            "inspection-results",
            "reject-commands",
            "line-stats",
            "line-counts",
            "retraining-samples",
            "dead-letters",
            "line-heartbeats",
        }
    )


def test_create_is_idempotent_and_matches_declarations(kafka_settings):
    # kafka_settings already created them once.
    assert set(create_topics(kafka_settings).values()) == {"exists"}
    admin = AdminClient({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers})
    md = admin.list_topics(timeout=10).topics
    for spec in TOPICS:
        name = kafka_settings.topic(spec.role)
        assert len(md[name].partitions) == spec.partitions
        configs = admin.describe_configs([ConfigResource("topic", name)])
        values = next(iter(configs.values())).result(timeout=10)
        for key, value in spec.config.items():
            assert values[key].value == value, (name, key)


def test_auto_topic_creation_is_off(kafka_settings):
    producer = Producer(producer_config(kafka_settings, **{"message.timeout.ms": 3000}))
    errors = []
    producer.produce(kafka_settings.topic("no-such-topic"), b"x", on_delivery=lambda e, m: errors.append(e))
    producer.flush(10)
    assert (
        errors
        and errors[0] is not None
        and errors[0].name() in {"_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_OR_PART", "_MSG_TIMED_OUT"}
    )
    admin = AdminClient({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers})
    assert kafka_settings.topic("no-such-topic") not in admin.list_topics(timeout=10).topics


def test_an_8_mb_frame_goes_through(kafka_settings):
    frame = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    assert len(frame) < MAX_MESSAGE_BYTES
    producer = Producer(producer_config(kafka_settings))
    errors = []
    producer.produce(kafka_settings.topic(FRAMES), frame, key=b"big", on_delivery=lambda e, m: errors.append(e))
    assert producer.flush(30) == 0 and errors == [None]
    reader = TopicReader(kafka_settings, kafka_settings.topic(FRAMES))
    records = reader.read_until(lambda r: len(r) >= 1, timeout_s=30)
    reader.close()
    assert records[0].value == frame


def test_consumer_config_can_fetch_a_full_frame(kafka_settings):
    cfg = consumer_config(kafka_settings, "g")
    assert cfg["max.partition.fetch.bytes"] >= MAX_MESSAGE_BYTES


def test_create_fails_clearly_without_a_cluster(kafka_settings):
    unreachable = kafka_settings.replace(kafka_bootstrap_servers="127.0.0.1:1")
    with pytest.raises(KafkaException):
        create_topics(unreachable, timeout_s=2)


def test_topic_problems_name_missing_topics_and_changelogs_faust_would_refuse(kafka_settings):
    assert topic_problems(kafka_settings) == []
    fresh = kafka_settings.replace(topic_prefix=kafka_settings.topic_prefix + "-none", app_id="never-created")
    missing = topic_problems(fresh)
    assert [p.split(" does not exist")[0] for p in missing] == [f"topic {name}" for name, _ in declared_topics(fresh)]
    assert all("`defectstream topics create`" in p for p in missing)
    # A stats window added after the topics were created: its table has no changelog.
    more_windows = kafka_settings.replace(stats_windows_s=kafka_settings.stats_windows_s + ",300")
    (new_changelog, spec), *_ = [t for t in changelog_topics(more_windows) if "-300s-" in t[0]]
    (problem,) = topic_problems(more_windows)
    assert problem.startswith(f"topic {new_changelog} does not exist")
    admin = AdminClient({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers})
    admin.create_topics([NewTopic(new_changelog, num_partitions=spec.partitions - 1)])[new_changelog].result(10)
    deadline = time.monotonic() + 10  # until the broker's metadata has the new topic
    while (problems := topic_problems(more_windows))[0].startswith(f"topic {new_changelog} does not exist"):
        assert time.monotonic() < deadline, problems
        time.sleep(0.2)
    (problem,) = problems
    assert problem.startswith(f"topic {new_changelog} has {spec.partitions - 1} partitions") and "delete" in problem


def test_topic_problems_raise_without_a_cluster(kafka_settings):
    with pytest.raises(KafkaException):
        topic_problems(kafka_settings.replace(kafka_bootstrap_servers="127.0.0.1:1"), timeout_s=2)
