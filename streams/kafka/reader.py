"""Read records back from a topic (demo summary, tests, analysts' quick taps) with confluent-kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from streams.kafka.config import consumer_config
from streams.settings import Settings


@dataclass(frozen=True)
class ReadRecord:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


class TopicReader:
    """A consumer in its own throw-away group that reads a topic from the beginning or, with ``from_end``, only the
    records written after it was created (a benchmark round must not pay for parsing every earlier round's)."""

    def __init__(self, settings: Settings, topic: str, group_id: str | None = None, *, from_end: bool = False):
        group = group_id or f"reader-{uuid.uuid4().hex[:8]}"
        self.consumer = Consumer(consumer_config(settings, group, **{"enable.auto.commit": False}))
        if not from_end:
            self.consumer.subscribe([topic])
            return
        # Assigned at each partition's current end, before this returns: with subscribe() and
        # auto.offset.reset=latest the end would be looked up at the first poll, after records may have arrived.
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [
            TopicPartition(topic, p, self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in sorted(partitions)
        ]
        self.consumer.assign(ends)

    def poll(self, timeout_s: float = 0.2) -> list[ReadRecord]:
        out = []
        first = self.consumer.poll(timeout_s)  # returns on the first record; consume() would wait out the timeout
        if first is None:
            return out
        for msg in [first, *self.consumer.consume(num_messages=500, timeout=0)]:
            if msg.error():
                raise RuntimeError(f"consumer error: {msg.error()}")
            out.append(ReadRecord(msg.key(), msg.value(), msg.partition(), msg.offset()))
        return out

    def read_until(
        self, done: Callable[[list[ReadRecord]], bool], timeout_s: float, settle_s: float = 0.0
    ) -> list[ReadRecord]:
        """Read until ``done(records)`` holds (then ``settle_s`` more, to catch extras) or ``timeout_s``."""
        records: list[ReadRecord] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(records):
            records.extend(self.poll())
        settle_until = time.monotonic() + settle_s
        while time.monotonic() < settle_until:
            records.extend(self.poll())
        return records

    def close(self) -> None:
        self.consumer.close()
