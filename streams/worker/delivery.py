"""Delivering one batch's outputs to Kafka before the batch is acked.

Kept apart from the Faust app (streams.worker.app) so its retry and give-up rules are testable without Kafka: the
app binds :func:`deliver_outputs` to its :class:`~streams.kafka.output_producer.OutputProducer` and its topic names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from streams.inspection import Outgoing
from streams.kafka import topics

log = logging.getLogger(__name__)

# How long a batch's records may stay undeliverable before the worker gives up (and exits without acking).
DELIVERY_DEADLINE_S = 120.0
FIRST_RETRY_S = 0.1
MAX_RETRY_S = 5.0


class Producer(Protocol):
    async def deliver(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[BaseException | object | None]: ...


async def deliver_outputs(
    producer: Producer,
    output_topics: dict[str, str],
    outgoing: list[Outgoing],
    *,
    deadline_s: float = DELIVERY_DEADLINE_S,
    exit: Callable[[int], object] = os._exit,
) -> None:
    """Send every record and wait until Kafka has it; the caller acks the batch only after this returns.

    Reject commands go first: if anything goes wrong afterwards, the gate has already been told. librdkafka retries
    on its own (idempotent: its retries do not repeat records) for most of the deadline; records it reports as
    failed are sent again, alone (which can repeat one that was stored after all: consumers de-duplicate by part id).
    If Kafka has not acknowledged every record by the deadline, the process exits hard (``exit(70)``), and if the
    producer failed for good its error propagates: either way the batch is never acked, and a restarted worker
    inspects it again rather than losing it."""
    pending = sorted(outgoing, key=lambda o: o.role != topics.REJECT_COMMANDS)
    deadline = time.monotonic() + deadline_s
    backoff = FIRST_RETRY_S
    while pending:
        try:
            errors = await asyncio.wait_for(
                producer.deliver([(output_topics[o.role], o.key, o.value) for o in pending]),
                timeout=max(deadline - time.monotonic(), 1.0),
            )
        except TimeoutError:
            errors = [TimeoutError("no acknowledgement from Kafka in time")] * len(pending)
        failed = [o for o, error in zip(pending, errors, strict=True) if error is not None]
        if not failed:
            return
        if time.monotonic() > deadline:
            log.critical(
                "%d records undeliverable for %.0fs; exiting without acking the batch", len(failed), deadline_s
            )
            exit(70)
            return  # only reached when ``exit`` returns (tests)
        first = next(error for error in errors if error is not None)
        log.warning("%d of %d records not delivered (%s); retrying in %.1fs", len(failed), len(pending), first, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_RETRY_S)
        pending = failed
