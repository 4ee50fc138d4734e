"""The worker's producer for what it publishes (results, reject commands, dead letters, retraining samples, line
stats): confluent-kafka (librdkafka), awaited from the event loop one batch at a time.

Why not Faust's own producer (aiokafka): sending a batch's records through it cost the worker's event loop more than
anything else it does per frame (in a py-spy profile of a burst, aiokafka's batch bookkeeping and Faust's send path
were about 30% of the loop's samples). librdkafka builds the requests, retries and keeps each partition in order in
its own C threads; the loop hands over bytes and awaits one future per batch. It is also idempotent, so its own
retries do not repeat records (a record it reported as failed may still have been stored, so re-sending it, like a
restarted worker re-inspecting unacked frames, can repeat it: consumers de-duplicate by part id). Faust's producer
still carries what Faust itself writes (table changelogs, offsets are the consumer's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)

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


class ProducerFailed(RuntimeError):
    """The producer hit a fatal error (e.g. idempotence state lost): it delivers nothing any more."""


class OutputProducer:
    """One librdkafka producer and the thread that serves its delivery reports.

    :meth:`deliver` produces records in the order given (so per partition Kafka keeps that order) and returns when
    Kafka has acknowledged or refused each of them; it raises :class:`ProducerFailed` once the producer is unusable,
    so the caller stops (unacked) instead of retrying a dead producer until its deadline."""

    def __init__(self, config: dict[str, Any]):
        self.fatal: KafkaError | None = None
        self._producer = Producer({**config, "error_cb": self._on_error})
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._serve_reports, name="output-producer-reports", daemon=True)
        self._poller.start()

    def _on_error(self, error: KafkaError) -> None:
        # Most errors here are transient (a broker connection lost and retried); librdkafka recovers on its own.
        if error.fatal():
            self.fatal = error
            log.critical("output producer: fatal error, nothing more can be delivered: %s", error)
        else:
            log.warning("output producer: %s", error)

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(POLL_INTERVAL_S)
            except Exception:  # a callback raised: keep serving reports, or every later batch would wait in vain
                log.exception("output producer: a delivery report callback failed")

    async def deliver(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[KafkaError | Exception | None]:
        """Produce ``(topic, key, value)`` records; per record, None once Kafka has it, or why it does not."""
        if self.fatal is not None:
            raise ProducerFailed(str(self.fatal))
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
        """Stop the report thread, then wait for outstanding deliveries (flush serves their reports itself); returns
        how many are still undelivered."""
        self._stop.set()
        self._poller.join()
        return self._producer.flush(timeout_s)
