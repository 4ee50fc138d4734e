"""The worker's producer for what it publishes (results, reject commands, dead letters, retraining samples, line
stats): confluent-kafka (librdkafka), awaited from the event loop one batch at a time.

Why not Faust's own producer (aiokafka): sending a batch's records through it cost the worker's event loop more than
anything else it does per frame (in a py-spy profile of a burst, aiokafka's batch bookkeeping and Faust's send path
were about 30% of the loop's samples). librdkafka builds the requests, retries and keeps each partition in order in
its own C threads; the loop hands over bytes and awaits one future per batch. It is also idempotent, so a retry never
repeats a record. Faust's producer still carries what Faust itself writes (table changelogs, offsets are the
consumer's).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

# How often the delivery-report thread returns from poll() to check whether it should stop.
POLL_INTERVAL_S = 0.1
# The producer's local queue is full (a slow or absent broker): wait this long before producing again.
QUEUE_FULL_WAIT_S = 0.05


class _Batch:
    """Delivery reports of one batch: the future resolves once every record has one (in the poll thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int):
        self.loop = loop
        self.future: asyncio.Future[list[KafkaError | Exception | None]] = loop.create_future()
        self.errors: list[KafkaError | Exception | None] = [None] * size
        self._left = size
        self._lock = threading.Lock()
        if size == 0:
            self.future.set_result(self.errors)

    def settle(self, index: int, error: KafkaError | Exception | None) -> None:
        self.errors[index] = error
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this batch any more
                self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():  # the caller may have stopped waiting (a timeout)
            self.future.set_result(self.errors)


class OutputProducer:
    """One librdkafka producer and the thread that serves its delivery reports.

    :meth:`deliver` produces records in the order given (so per partition Kafka keeps that order) and returns when
    Kafka has acknowledged or refused each of them."""

    def __init__(self, config: dict[str, Any]):
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._serve_reports, name="output-producer-reports", daemon=True)
        self._poller.start()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_INTERVAL_S)

    async def deliver(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[KafkaError | Exception | None]:
        """Produce ``(topic, key, value)`` records; per record, None once Kafka has it, or why it does not."""
        batch = _Batch(asyncio.get_running_loop(), len(records))
        for index, (topic, key, value) in enumerate(records):
            while True:
                try:
                    self._producer.produce(
                        topic, value=value, key=key, on_delivery=lambda err, _msg, i=index: batch.settle(i, err)
                    )
                    break
                except BufferError:
                    await asyncio.sleep(QUEUE_FULL_WAIT_S)  # the report thread drains the queue meanwhile
                except KafkaException as exc:  # refused before it was queued, e.g. larger than the producer allows
                    batch.settle(index, exc)
                    break
        return await batch.future

    def close(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries, then stop the report thread; returns how many are still undelivered."""
        self._stop.set()
        self._poller.join()
        return self._producer.flush(timeout_s)
