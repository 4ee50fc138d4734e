"""Batches from take to ack: several inspected at once, delivered and acked strictly in the order taken.

Kept apart from the Faust agent (streams.worker.app) so the ordering and shutdown rules are testable without Kafka:
the agent hands each batch of events to :meth:`BatchPipeline.submit` and calls :meth:`BatchPipeline.drain` when the
stream ends or the worker stops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from streams.inspection import Outgoing

log = logging.getLogger(__name__)


def exit_if_failed(task: asyncio.Future, exit: Callable[[int], object] = os._exit) -> None:
    """Done-callback of a batch's task: a batch whose inspection, delivery or acks raised stays unacked, and every
    later batch would queue behind it; exit at once (unacked) instead of when the next batch happens to arrive.
    Nothing cancels a batch's task (shutdown waits for it), so a cancelled one is left alone."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical("a batch failed before it was acked; exiting without acking it", exc_info=task.exception())
    exit(70)


@dataclass
class BatchInFlight:
    """Where one batch is between take and ack, for the batch watchdog (streams.worker.batch_watch)."""

    frames: int
    taken_at: float  # the pipeline's clock
    step: str = "inspection"  # then "waiting for the batch before it", "delivery", "acks"


class BatchPipeline:
    """Up to ``max_in_flight`` batches between take and ack. Each batch is inspected as soon as it is submitted
    (the stages run in their own threads, so batch N+1 is decoded and inferred while N is delivered), but delivered
    only after the batch before it was delivered and acked: one gate's commands stay in order, and Faust never sees
    an acked offset after an unacked one."""

    def __init__(
        self,
        *,
        inspect: Callable[[list[Any]], Awaitable[list[Outgoing]]],
        deliver: Callable[[list[Outgoing]], Awaitable[None]],
        ack: Callable[[Any], Awaitable[Any]],
        max_in_flight: int,
        on_batch_done: Callable[[asyncio.Future], object] = exit_if_failed,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._inspect, self._deliver, self._ack = inspect, deliver, ack
        self._max_in_flight = max_in_flight
        self._on_batch_done = on_batch_done
        self._clock = clock
        self._in_flight: collections.deque[asyncio.Future] = collections.deque()  # oldest first
        self._progress: dict[asyncio.Future, BatchInFlight] = {}
        self.batches_taken = 0

    def __len__(self) -> int:
        """Batches not yet delivered and acked. Finished ones leave the queue only at the next submit, and must not
        make a worker waiting for input look busy to the fetch watchdog."""
        return sum(not task.done() for task in self._in_flight)

    @property
    def full(self) -> bool:
        return len(self._in_flight) >= self._max_in_flight

    def oldest_unfinished(self) -> BatchInFlight | None:
        """The oldest batch not yet delivered and acked (every later one waits for it), or None."""
        for task in self._in_flight:
            if not task.done():
                return self._progress[task]
        return None

    async def submit(self, events: list[Any]) -> None:
        """Start the batch; return once there is room for the next one (at once, unless the pipeline is full)."""
        progress = BatchInFlight(len(events), self._clock())
        task = asyncio.ensure_future(self._process(events, self._in_flight[-1] if self._in_flight else None, progress))
        task.add_done_callback(self._on_batch_done)
        task.add_done_callback(self._progress.pop)
        self._progress[task] = progress
        self._in_flight.append(task)
        self.batches_taken += 1
        while self._in_flight and self._in_flight[0].done():
            self._in_flight.popleft()
        while len(self._in_flight) >= self._max_in_flight:
            await self._wait_for_oldest()

    async def drain(self) -> None:
        """Wait until every submitted batch is delivered and acked; raises the error of the first batch that
        failed (the agent exits on it, unacked)."""
        while self._in_flight:
            await self._wait_for_oldest()

    async def _wait_for_oldest(self) -> None:
        # Shielded: cancelling this wait (a shutdown) must not cancel the batch. The batch leaves _in_flight only
        # once it is done, so a drain() after an interrupted wait still waits for it.
        await asyncio.shield(self._in_flight[0])
        self._in_flight.popleft()

    async def _process(self, events: list[Any], previous: asyncio.Future | None, progress: BatchInFlight) -> None:
        outgoing = await self._inspect(events)
        if previous is not None:
            progress.step = "waiting for the batch before it"
            await previous  # raises if the batch before failed: then this one is never acked either
        progress.step = "delivery"
        await self._deliver(outgoing)
        progress.step = "acks"
        for event in events:
            await self._ack(event)
