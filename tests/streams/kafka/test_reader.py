from confluent_kafka import Producer

from streams.kafka import topics
from streams.kafka.config import producer_config
from streams.kafka.reader import TopicReader


def _send(settings, topic, values):
    producer = Producer(producer_config(settings))
    for i, value in enumerate(values):
        producer.produce(topic, key=str(i).encode(), value=value)
    assert producer.flush(10) == 0


def test_reader_from_end_sees_only_what_is_written_after_it(kafka_settings):
    topic = kafka_settings.topic(topics.RESULTS)
    _send(kafka_settings, topic, [b"old-%d" % i for i in range(5)])
    from_end = TopicReader(kafka_settings, topic, from_end=True)
    from_start = TopicReader(kafka_settings, topic)
    try:
        _send(kafka_settings, topic, [b"new-%d" % i for i in range(3)])
        new = from_end.read_until(lambda r: len(r) >= 3, timeout_s=30, settle_s=1)
        everything = from_start.read_until(lambda r: len(r) >= 8, timeout_s=30)
    finally:
        from_end.close()
        from_start.close()
    assert sorted(r.value for r in new) == [b"new-0", b"new-1", b"new-2"]
    assert len(everything) == 8
