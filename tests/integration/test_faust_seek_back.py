"""Faust's seek back to the committed offsets and its livelock check, on the real broker, with a real aiokafka consumer.

Faust drops records it already took from aiokafka whenever it stops the flow mid-batch and relies on this seek to
fetch them again; aiokafka leaves a partition without a committed offset where it is, after the dropped records
(streams.worker.faust_fixes.seek_uncommitted_to_reset_position). Faust's livelock check reads positions that
aiokafka leaves unset while it resets one (skip_unpositioned_in_livelock_check)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy
from confluent_kafka import Producer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.kafka import topics
from streams.kafka.config import bootstrap, producer_config
from streams.worker.faust_fixes import seek_uncommitted_to_reset_position, skip_unpositioned_in_livelock_check

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


class LivelockCheckStandIn:
    """What Faust's livelock check reads from its consumer thread, around a real aiokafka consumer."""

    _verify_aiokafka_event_path = AIOKafkaConsumerThread._verify_aiokafka_event_path

    def __init__(self, consumer: AIOKafkaConsumer):
        self._consumer = consumer
        self.time_started = time.monotonic()
        self.tp_fetch_request_timeout_secs = self.tp_stream_timeout_secs = 300.0
        self.log = logging.getLogger("livelock-check")
        monitor = SimpleNamespace(stream_inbound_time={})
        self.consumer = SimpleNamespace(
            app=SimpleNamespace(monitor=monitor, topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        )

    def _ensure_consumer(self) -> AIOKafkaConsumer:
        return self._consumer


async def livelock_check_during_reset(settings, verify_event_path) -> list[str]:
    """Fetch from partition 0, start a reset of its position, and run the livelock check while it is unset."""
    tp = TopicPartition(settings.topic(topics.FRAMES), 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        async with asyncio.timeout(30):
            while not await consumer.getmany(tp, timeout_ms=1000):
                pass
        state = consumer._subscription.subscription.assignment.state_value(tp)
        reset = consumer._fetcher.request_offset_reset([tp], OffsetResetStrategy.EARLIEST)  # as seek_to_beginning
        assert not state.has_valid_position
        outcome = []
        try:
            verify_event_path(LivelockCheckStandIn(consumer), time.monotonic(), tp)
            outcome.append("passed over")
        except AssertionError:
            outcome.append("AssertionError")
        await reset
        assert state.position == 0
        verify_event_path(LivelockCheckStandIn(consumer), time.monotonic(), tp)  # positioned again: checked as before
        return outcome
    finally:
        await consumer.stop()


def test_livelock_check_passes_over_a_partition_being_repositioned(frames_in_partition_0):
    skip_unpositioned_in_livelock_check()
    skip_unpositioned_in_livelock_check()  # idempotent: one wrapper
    patched = AIOKafkaConsumerThread.verify_event_path
    assert not getattr(patched.__wrapped__, "skips_unpositioned", False)
    # The defect: Faust's own check reads the unset position and aiokafka's assertion fires (it crashes the consumer).
    assert asyncio.run(livelock_check_during_reset(frames_in_partition_0, patched.__wrapped__)) == ["AssertionError"]
    assert asyncio.run(livelock_check_during_reset(frames_in_partition_0, patched)) == ["passed over"]
