import asyncio
import socket

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka import topics
from streams.kafka.config import MAX_MESSAGE_BYTES, admin_config, worker_output_config
from streams.kafka.output_producer import OutputProducer, ProducerFailed
from streams.kafka.reader import TopicReader


def _deliver(producer: OutputProducer, records: list[tuple[str, bytes, bytes]]) -> list:
    # Bounded: a producer that stopped serving delivery reports fails the test instead of hanging it.
    return asyncio.run(asyncio.wait_for(producer.deliver(records), timeout=30))


def test_every_record_is_acknowledged_in_order_on_the_partition_a_java_client_would_choose(kafka_settings):
    topic = kafka_settings.topic(topics.RESULTS)
    keys = [b"line-a", b"line-b", b"line-c"]
    records = [(topic, keys[i % 3], b"%d" % i) for i in range(60)]
    producer = OutputProducer(worker_output_config(kafka_settings, delivery_timeout_s=30))
    try:
        assert _deliver(producer, records[:30]) == [None] * 30
        assert _deliver(producer, records[30:]) == [None] * 30
    finally:
        assert producer.close() == 0
    reader = TopicReader(kafka_settings, topic)
    try:
        read = reader.read_until(lambda r: len(r) >= 60, timeout_s=30)
    finally:
        reader.close()
    assert len(read) == 60
    partitions = list(range(topics.topic_spec(topics.RESULTS).partitions))
    java_partition = DefaultPartitioner()  # murmur2, as the Java client and aiokafka (Faust) partition keys
    for key in keys:
        mine = [r for r in read if r.key == key]
        assert [int(r.value) for r in mine] == [int(v) for _, k, v in records if k == key]
        assert {r.partition for r in mine} == {java_partition(key, partitions, partitions)}


def test_a_refused_record_is_reported_and_the_others_are_delivered(kafka_settings):
    topic = kafka_settings.topic(topics.RESULTS)
    producer = OutputProducer(worker_output_config(kafka_settings, delivery_timeout_s=30))
    try:
        errors = _deliver(
            producer, [(topic, b"k", b"small"), (topic, b"k", b"x" * MAX_MESSAGE_BYTES), (topic, b"k", b"")]
        )
        assert _deliver(producer, []) == []
    finally:
        producer.close()
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], KafkaException)
    assert errors[1].args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_a_record_the_broker_refuses_is_reported_and_the_producer_goes_on(kafka_settings):
    # Below the producer's own limit, above the topic's: produce() queues it and the broker refuses it, so the
    # refusal arrives in the delivery report (a KafkaError, not produce()'s KafkaException). The idempotent producer
    # must stay usable for the next batch.
    topic = kafka_settings.topic("small-records")
    admin = AdminClient(admin_config(kafka_settings))
    created = admin.create_topics([NewTopic(topic, 1, config={"max.message.bytes": "2048"})])
    created[topic].result(timeout=30)
    producer = OutputProducer(worker_output_config(kafka_settings, delivery_timeout_s=30))
    try:
        (refused,) = _deliver(producer, [(topic, b"k", b"x" * 8192)])
        assert _deliver(producer, [(topic, b"k", b"fits")]) == [None]
    finally:
        assert producer.close() == 0
    assert isinstance(refused, KafkaError)
    assert refused.code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert producer.fatal is None


def test_without_a_broker_each_record_times_out_instead_of_waiting_forever(base_settings):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = base_settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{port}")
    producer = OutputProducer(worker_output_config(settings, delivery_timeout_s=0.5))
    try:
        errors = asyncio.run(asyncio.wait_for(producer.deliver([("t", b"k", b"1"), ("t", b"k", b"2")]), timeout=20))
    finally:
        assert producer.close(timeout_s=1) == 0  # timed-out records are no longer outstanding
    assert [e.code() for e in errors] == [KafkaError._MSG_TIMED_OUT] * 2


def test_reports_of_a_batch_nobody_waits_for_any_more_do_not_stop_later_batches(kafka_settings):
    topic = kafka_settings.topic(topics.RESULTS)
    producer = OutputProducer(worker_output_config(kafka_settings, delivery_timeout_s=30))
    try:
        with pytest.raises(TimeoutError):  # given up on at once; its reports arrive after this loop is closed
            asyncio.run(asyncio.wait_for(producer.deliver([(topic, b"k", b"abandoned")]), timeout=0.0001))
        assert _deliver(producer, [(topic, b"k", b"next")]) == [None]
    finally:
        assert producer.close() == 0


def test_after_a_fatal_error_deliver_refuses_instead_of_retrying_a_dead_producer(kafka_settings):
    topic = kafka_settings.topic(topics.RESULTS)
    producer = OutputProducer(worker_output_config(kafka_settings, delivery_timeout_s=30))
    try:
        assert _deliver(producer, [(topic, b"k", b"before")]) == [None]
        # What librdkafka's error callback receives when, e.g., the idempotent producer's state is lost.
        producer._on_error(KafkaError(KafkaError._FATAL, "idempotence state lost", fatal=True))
        with pytest.raises(ProducerFailed, match="idempotence state lost"):
            _deliver(producer, [(topic, b"k", b"after")])
    finally:
        producer.close()
