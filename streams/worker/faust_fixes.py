"""Fixes and alarms for known faust-streaming defects that would lose frames; installed once per worker process.

:func:`fence_seek_to_committed` (faust-streaming#596; drop it when Faust fixes that) and :func:`log_offset_gaps`
patch :class:`faust.transport.consumer.Consumer` in place and otherwise keep Faust's behaviour; :class:`FlowWatchdog`
covers the fence's failure path (a flow nobody resumes). :func:`seek_uncommitted_to_reset_position` makes Faust's
seek back also cover partitions with nothing committed yet, and :func:`skip_unpositioned_in_livelock_check` keeps
Faust's livelock check from crashing on a partition being repositioned. :func:`as_current_event` works around
faust-streaming#497 (no table writes from a batch of ``take``), and :func:`drop_restored_window` expires the windows
a table restored from its changelog, which Faust never does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)


def fence_seek_to_committed() -> None:
    """Stop the consumer's flow before Faust seeks stream partitions back to their committed offsets.

    faust-streaming#596 (open; seen here as 5-6 frames lost per partition on worker failover): when recovery
    completes, ``Recovery.on_recovery_completed`` resumes the stream partitions *while the consumer flow is still
    active*, then awaits ``perform_seek`` (one broker round trip per partition). Frames fetched meanwhile are
    delivered into the agents' channel queues and their offsets recorded as read; right after the seek,
    ``app.flow_control.resume()`` clears those queues. The seek reset the read offsets, so the next frame looks like
    a jump and Faust marks the skipped range as a gap and commits over it; the re-fetched copies are dropped as
    already read. With the flow stopped first, nothing is delivered until Recovery resumes the flow, right after
    clearing the queues, and fetching restarts at the committed offsets. Every caller of ``perform_seek`` resumes
    the flow itself afterwards (or runs with it stopped), so leaving it stopped here is safe. Recovery runs the seek
    in a task of its own, so the fetcher can still take a batch between the resume and this stop; stopping the flow
    makes Faust drop the rest of that batch, and the seek fetches it again (for a partition with nothing committed
    only with :func:`seek_uncommitted_to_reset_position`).
    """
    from faust.transport.consumer import Consumer

    if getattr(Consumer.perform_seek, "fenced", False):
        return
    original = Consumer.perform_seek

    async def perform_seek(self: Consumer) -> None:
        self.stop_flow()
        await original(self)

    perform_seek.fenced = True  # type: ignore[attr-defined]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]


def seek_uncommitted_to_reset_position() -> None:
    """Make Faust's "seek stream partitions to committed offsets" also rewind partitions that have no committed offset.

    Faust drops records it has already taken from aiokafka whenever it stops the flow (a rebalance, the fence above)
    or the generation changes in the middle of a fetched batch, and counts on seeking back to the committed offsets
    to fetch them again. aiokafka's ``seek_to_committed`` seeks only partitions whose committed offset is above 0, so
    for a partition with nothing committed (a new group, or a worker killed before its first commit, as in the
    SIGKILL failover test) the position stays after the dropped records: they are never fetched again, the partition
    shows lag and nothing is read from it until the worker restarts. Seen here as 3 of ~33 failover runs in which the
    new worker inspected nothing of one partition, and caught by the fetch watchdog with aiokafka's position at the
    end of the partition and Faust's read offset still empty (streams.worker.fetch_watch). Such partitions are
    rewound to where the consumer group's reset policy starts (``consumer_auto_offset_reset``: the worker uses
    "earliest"), which is what a new consumer with nothing committed reads from anyway; at-least-once, a repeat
    carries the same part id. Changelog partitions are left to Faust's recovery, which positions them itself.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread.seek_to_committed, "rewinds_uncommitted", False):
        return
    original = AIOKafkaConsumerThread.seek_to_committed

    @functools.wraps(original)
    async def seek_to_committed(self: AIOKafkaConsumerThread) -> Mapping[Any, int | None]:
        committed = await original(self)
        uncommitted = [
            tp
            for tp, offset in committed.items()
            if (offset is None or offset <= 0) and not self.consumer._is_changelog_tp(tp)
        ]
        if uncommitted:
            policy = self.app.conf.consumer_auto_offset_reset
            if policy != "earliest":  # streams.worker.app sets it; another start would need another rewind
                raise ValueError(f"consumer_auto_offset_reset={policy!r}: only 'earliest' is rewound to")
            topics = sorted({tp.topic for tp in uncommitted})
            log.info(
                "no committed offset for %s: rewinding to the earliest offset (a repeat of a frame read before has "
                "the same part id)",
                {topic: sorted(tp.partition for tp in uncommitted if tp.topic == topic) for topic in topics},
            )
            # To an explicit offset, not seek_to_beginning: that one leaves the position unset until the fetcher
            # gets to the reset (after a long poll in flight, up to 1.5 s), and Faust's livelock check reads every
            # assigned partition's position and crashes the consumer on an unset one (seen in 1 of 16 loop runs).
            await self.call_thread(_seek_to_earliest, self._ensure_consumer(), uncommitted)
        return committed

    seek_to_committed.rewinds_uncommitted = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]


async def _seek_to_earliest(consumer: Any, partitions: list[Any]) -> None:
    earliest = await consumer.beginning_offsets(partitions)
    assigned = consumer.assignment()  # a rebalance during the lookup may have taken some away
    for tp, offset in earliest.items():
        if tp in assigned:
            consumer.seek(tp, offset)


def skip_unpositioned_in_livelock_check() -> None:
    """Let Faust's livelock check pass over a partition whose position aiokafka is resetting, instead of crashing.

    Every 2.5 commit intervals Faust checks each assigned partition that has been fetched from and reads aiokafka's
    position for it; aiokafka asserts the position is set. While aiokafka resets a partition (a reset policy applied
    after an out-of-range offset, a ``seek_to_beginning``) the position is unset until the fetcher gets to it, up to a
    long poll later, and the AssertionError crashes Faust's consumer service: the worker stops. Seen here once, when
    a rewind still used ``seek_to_beginning``. Such a partition is being repositioned, not stuck, so the check skips
    it this round."""
    from aiokafka import TopicPartition
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread.verify_event_path, "skips_unpositioned", False):
        return
    original = AIOKafkaConsumerThread.verify_event_path

    @functools.wraps(original)
    def verify_event_path(self: AIOKafkaConsumerThread, now: float, tp: Any) -> None:
        assignment = self._ensure_consumer()._fetcher._subscriptions.subscription.assignment
        state = assignment.state_value(TopicPartition(tp.topic, tp.partition)) if assignment else None
        if state is not None and not state.has_valid_position:
            return None
        return original(self, now, tp)

    verify_event_path.skips_unpositioned = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread.verify_event_path = verify_event_path  # type: ignore[method-assign]


# Longer than any healthy stop: a rebalance takes seconds to a session timeout (10 s), Faust's seek back to the
# committed offsets times out after broker_request_timeout (90 s), and changelog recovery runs with the flow on.
FLOW_STALL_LIMIT_S = 180.0


class FlowWatchdog:
    """Tells when the consumer flow has been stopped for longer than ``limit_s``.

    A stopped flow that nobody resumes (seek timeout, a crashed Recovery service) leaves the worker up and
    consuming nothing; only the lag would show it. The worker exits instead, unacked, so its supervisor restarts
    it and the frames are fetched again from the committed offsets."""

    def __init__(self, limit_s: float = FLOW_STALL_LIMIT_S, clock: Callable[[], float] = time.monotonic):
        self.limit_s = limit_s
        self._clock = clock
        self._stopped_since: float | None = None

    def stalled_for(self, flow_active: bool) -> float | None:
        """Seconds the flow has been stopped, once past the limit; None while it flows or within the limit."""
        now = self._clock()
        if flow_active:
            self._stopped_since = None
            return None
        if self._stopped_since is None:
            self._stopped_since = now
        elapsed = now - self._stopped_since
        return elapsed if elapsed > self.limit_s else None


def log_offset_gaps() -> None:
    """Log every offset range Faust marks as a gap: it then commits past those offsets as if consumed. Our topics
    are neither compacted nor transactional, so a gap here means frames skipped, never a legitimate hole."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer._add_gap, "logged", False):
        return
    original = Consumer._add_gap

    async def add_gap(self: Consumer, tp, offset_from: int, offset_to: int) -> None:
        log.warning(
            "Faust marks offsets %d..%d of %s as a gap (committed %s): they will be committed unprocessed",
            offset_from,
            offset_to,
            tp,
            self._committed_offset[tp],
        )
        await original(self, tp, offset_from, offset_to)

    add_gap.logged = True  # type: ignore[attr-defined]
    Consumer._add_gap = add_gap  # type: ignore[method-assign]


# While a stream's buffer is under pressure, Faust leaves its partitions out of the fetch: how long a fetch of the
# other partitions may then wait before the buffered ones are looked at again. Far below the time a drained buffer
# lasts (Faust resumes a partition with 40% of the buffer, e.g. 12 frames, still queued).
BUFFERED_FETCH_WAIT_S = 0.01


def refetch_buffered_partitions_promptly() -> None:
    """Fetch a partition again as soon as its stream buffer has drained, not up to a second later.

    Faust's backpressure: once a stream's queue reaches 80% of ``stream_buffer_maxsize``, the partition that filled
    it is left out of the next fetches, and it is let back in once the queue has drained to 40%. But the fetcher does
    not wait for that: it is meanwhile waiting, up to 1 s, in a fetch of the partitions still in (the worker's
    line-counts partitions, with a few records a second), or, with none left, in a 1 s sleep. Either way the agent
    runs out of frames well before the wait ends. Seen in the e2e bench with the worker on a core of its own: during
    bursts the frames queue was empty with room in the batch pipeline 10-33% of the time, with fetches of 0.6-1 s,
    and 0-2% with this fix. While a partition of this worker is held back, a fetch waits at most
    ``BUFFERED_FETCH_WAIT_S`` (and with every partition held back, the fetcher checks again after that long), so the
    partition is fetched again within that time of being let back in. Partitions are never fetched sooner than Faust
    allows; only the wait is shorter."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer._wait_next_records, "prompt", False):
        return
    original = Consumer._wait_next_records

    @functools.wraps(original)
    async def wait_next_records(self: Consumer, timeout: float) -> Any:
        if not self.flow_active:
            # As Faust does first; then the first fetch after a resume is covered too.
            await self.wait(self.can_resume_flow)
        held_back = self._buffered_partitions
        # A partition revoked while held back stays in this set until its queue drains: only an assigned one is worth
        # waking up for (an idle worker must not poll every few milliseconds).
        if held_back and self.flow_active and not held_back.isdisjoint(self.assignment()):
            if not self._get_active_partitions():
                await self.sleep(BUFFERED_FETCH_WAIT_S)
                return {}, set()
            timeout = min(timeout, BUFFERED_FETCH_WAIT_S)
        return await original(self, timeout)

    wait_next_records.prompt = True  # type: ignore[attr-defined]
    Consumer._wait_next_records = wait_next_records  # type: ignore[method-assign]


@contextlib.contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Within the block, ``event`` is the current event of this task, as inside Faust's own per-event iteration.

    faust-streaming#497 (open): a table written from a batch of ``take``/``noack_take`` raises "Cannot modify table
    key from outside of stream iteration", because those batches are filled by another task. A table write needs
    the current event twice: its partition is the changelog partition the write goes to (so the table recovers on
    the worker that owns that partition), and a windowed table relative to the stream takes the window from its
    timestamp. Only this task's context variable is set: the take buffer reads the stream's own ``current_event``
    attribute, which is left alone."""
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def drop_restored_window(table: Any, key: Any) -> None:
    """Remove a window from a windowed table's in-memory store, as Faust's own expiry does (no changelog record).

    Faust schedules a window for expiry only when this process writes it (``Table._maybe_set_key_ttl``); windows the
    memory store restores from the changelog (``apply_changelog_batch``) are never scheduled, so without this they
    stay in memory until the process ends. The store also notes their partition (``_key_partition``), forgotten
    here too."""
    store = table.data
    store.pop(key, None)
    key_partition = getattr(store, "_key_partition", None)
    if key_partition is not None:
        key_partition.pop(key, None)


def install() -> None:
    fence_seek_to_committed()
    seek_uncommitted_to_reset_position()
    skip_unpositioned_in_livelock_check()
    log_offset_gaps()
    refetch_buffered_partitions_promptly()
