"""Faust's seek back to the committed offsets, on the real broker, for a partition with nothing committed.

Faust drops records it already took from aiokafka whenever it stops the flow mid-batch and relies on this seek to
fetch them again; aiokafka leaves a partition without a committed offset where it is, after the dropped records
(streams.worker.faust_fixes.seek_uncommitted_to_reset_position)."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.kafka import topics
from streams.kafka.config import bootstrap, producer_config
from streams.worker.faust_fixes import seek_uncommitted_to_reset_position

pytestmark = pytest.mark.integration

RECORDS = 10


class ConsumerThreadStandIn:
    """What Faust's consumer thread gives the seek: its aiokafka consumer (real, on the broker) called in place."""

    def __init__(self, consumer: AIOKafkaConsumer, changelog_topics: set[str], reset: str):
        self._consumer = consumer
        self.consumer = SimpleNamespace(_is_changelog_tp=lambda tp: tp.topic in changelog_topics)
        self.app = SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset=reset))

    def _ensure_consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    async def call_thread(self, method, *args):
        return await method(*args)


async def position_after_seek_back(
    settings, seek_to_committed, changelog_topics: set[str] = frozenset(), reset: str = "earliest"
) -> int:
    """Read every record of partition 0 in a new group without committing, then seek back: the position it leaves."""
    tp = TopicPartition(settings.topic(topics.FRAMES), 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(settings),
        group_id=f"seek-back-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        read = 0
        async with asyncio.timeout(30):
            while read < RECORDS:
                read += sum(len(v) for v in (await consumer.getmany(timeout_ms=1000)).values())
        assert await consumer.position(tp) == RECORDS
        # Faust's livelock check reads every assigned partition's position at any time and crashes the consumer on
        # an unset one: the seek must never leave it unset, not even while it runs.
        state = consumer._subscription.subscription.assignment.state_value(tp)
        unset = []

        async def watch_position() -> None:
            while True:
                if not state.has_valid_position:
                    unset.append(True)
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch_position())
        try:
            committed = await seek_to_committed(ConsumerThreadStandIn(consumer, changelog_topics, reset))
        finally:
            watcher.cancel()
        assert committed == {tp: None}
        assert not unset, "the position was unset during the seek"
        return state.position
    finally:
        await consumer.stop()


@pytest.fixture
def frames_in_partition_0(kafka_settings):
    producer = Producer(producer_config(kafka_settings))
    for i in range(RECORDS):
        producer.produce(kafka_settings.topic(topics.FRAMES), value=b"x", key=str(i).encode(), partition=0)
    assert producer.flush(30) == 0
    return kafka_settings


def test_uncommitted_partition_is_rewound_to_the_start(frames_in_partition_0):
    seek_uncommitted_to_reset_position()
    seek_uncommitted_to_reset_position()  # idempotent: one wrapper
    patched = AIOKafkaConsumerThread.seek_to_committed
    assert not getattr(patched.__wrapped__, "rewinds_uncommitted", False)
    settings = frames_in_partition_0
    # The defect: aiokafka alone leaves the position after the records read, so records dropped by Faust are never
    # fetched again.
    assert asyncio.run(position_after_seek_back(settings, patched.__wrapped__)) == RECORDS
    assert asyncio.run(position_after_seek_back(settings, patched)) == 0
    # Changelog partitions are positioned by Faust's recovery, never rewound here.
    frames = {settings.topic(topics.FRAMES)}
    assert asyncio.run(position_after_seek_back(settings, patched, changelog_topics=frames)) == RECORDS
    # The worker always starts a new group at "earliest"; any other policy is refused, not silently rewound.
    with pytest.raises(ValueError, match="only 'earliest'"):
        asyncio.run(position_after_seek_back(settings, patched, reset="latest"))
