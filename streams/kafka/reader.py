"""Read records back from a topic (demo summary, tests, analysts' quick taps) with confluent-kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer

from streams.kafka.config import consumer_config
from streams.settings import Settings


@dataclass(frozen=True)
class ReadRecord:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


class TopicReader:
    """A consumer in its own throw-away group that reads a topic from the beginning."""

    def __init__(self, settings: Settings, topic: str, group_id: str | None = None):
        group = group_id or f"reader-{uuid.uuid4().hex[:8]}"
        self.consumer = Consumer(consumer_config(settings, group, **{"enable.auto.commit": False}))
        self.consumer.subscribe([topic])

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
