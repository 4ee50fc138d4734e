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

from confluent_kafka import KafkaError, KafkaException

from streams.inspection import Outgoing
from streams.kafka import topics

log = logging.getLogger(__name__)

# How long a batch's records may stay undeliverable before the worker gives up (and exits without acking).
DELIVERY_DEADLINE_S = 120.0
FIRST_RETRY_S = 0.1
MAX_RETRY_S = 5.0
# Best-effort outputs: a record of these roles that Kafka refuses for good is dropped (logged and counted) instead of
# holding the batch, and with it inspection, until the worker gives up. Verdicts, reject commands, dead letters and
# line counts are never dropped.
DROPPABLE_ROLES = frozenset({topics.RETRAINING_SAMPLES})
# Refusals of one record that no retry changes: the record, or the topic's limits, are the problem (e.g. a retraining
# sample larger than the topic's max.message.bytes). Refusals of a whole topic or cluster (authorization, unknown
# topic) are not here: those hold every batch, and the worker stops on them.
# INVALID_TIMESTAMP: the host clock is off by more than the topic allows (message.timestamp.*.max.ms).
PERMANENT_REFUSALS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
    }
)


def permanent_refusal(error: BaseException | object | None) -> str | None:
    """The name of Kafka's error code when ``error`` refuses the record for good, else None."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]  # refused by the producer itself, before it was sent
    if isinstance(error, KafkaError) and error.code() in PERMANENT_REFUSALS:
        return error.name()
    return None


def log_dropped(outgoing: Outgoing, reason: str) -> None:
    part_id = getattr(outgoing.record, "part_id", None)
    log.error(
        "%s record of part %s (%d bytes) dropped: Kafka refuses it for good (%s)",
        outgoing.role,
        part_id,
        len(outgoing.value),
        reason,
    )


class Producer(Protocol):
    async def deliver(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[BaseException | object | None]: ...


async def deliver_outputs(
    producer: Producer,
    output_topics: dict[str, str],
    outgoing: list[Outgoing],
    *,
    deadline_s: float = DELIVERY_DEADLINE_S,
    exit: Callable[[int], object] = os._exit,
    on_dropped: Callable[[Outgoing, str], object] = log_dropped,
) -> None:
    """Send every record and wait until Kafka has it; the caller acks the batch only after this returns.

    Reject commands go first: if anything goes wrong afterwards, the gate has already been told. librdkafka retries
    on its own (idempotent: its retries do not repeat records) for most of the deadline; records it reports as
    failed are sent again, alone (which can repeat one that was stored after all: consumers de-duplicate by part id).
    If Kafka has not acknowledged every record by the deadline, the process exits hard (``exit(70)``), and if the
    producer failed for good its error propagates: either way the batch is never acked, and a restarted worker
    inspects it again rather than losing it. The one exception: a record of a best-effort role (retraining samples)
    that Kafka refuses for good is handed to ``on_dropped`` with the reason and not sent again."""
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
        failed: list[tuple[Outgoing, BaseException | object]] = []
        for o, error in zip(pending, errors, strict=True):
            if error is not None and o.role in DROPPABLE_ROLES and (reason := permanent_refusal(error)) is not None:
                sent_with_others = sum(p.role == o.role for p in pending) > 1
                error = await _drop_or_deliver_alone(
                    producer, output_topics[o.role], o, reason, sent_with_others, on_dropped, deadline
                )
            if error is not None:
                failed.append((o, error))
        if not failed:
            return
        if time.monotonic() > deadline:
            log.critical(
                "%d records undeliverable for %.0fs; exiting without acking the batch", len(failed), deadline_s
            )
            exit(70)
            return  # only reached when ``exit`` returns (tests)
        log.warning(
            "%d of %d records not delivered (%s); retrying in %.1fs", len(failed), len(pending), failed[0][1], backoff
        )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_RETRY_S)
        pending = [o for o, _error in failed]


async def _drop_or_deliver_alone(
    producer: Producer,
    topic: str,
    outgoing: Outgoing,
    reason: str,
    sent_with_others: bool,
    on_dropped: Callable[[Outgoing, str], object],
    deadline: float,
) -> BaseException | object | None:
    """A record refused for good is dropped, unless it was sent along with others of its topic: librdkafka refuses a
    whole produce batch for its size and does not split it, so it is first sent once on its own. Returns the error to
    retry on, or None once it is delivered or dropped."""
    if sent_with_others:
        try:
            (error,) = await asyncio.wait_for(
                producer.deliver([(topic, outgoing.key, outgoing.value)]),
                timeout=max(deadline - time.monotonic(), 1.0),
            )
        except TimeoutError:
            return TimeoutError("no acknowledgement from Kafka in time")
        if error is None:
            return None
        alone = permanent_refusal(error)
        if alone is None:
            return error
        reason = alone
    on_dropped(outgoing, reason)
    return None
