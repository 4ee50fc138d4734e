"""Fixes for faust-streaming defects that lose frames, and the alarm for Faust's gap marking."""

import asyncio
import logging
from collections import defaultdict
from types import SimpleNamespace

import faust
import pytest
from faust.streams import current_event
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.worker.faust_fixes import (
    BUFFERED_FETCH_WAIT_S,
    FlowWatchdog,
    as_current_event,
    drop_restored_window,
    fence_seek_to_committed,
    log_offset_gaps,
    refetch_buffered_partitions_promptly,
)


def test_faust_gap_marking_is_logged_and_still_applied(caplog):
    log_offset_gaps()
    log_offset_gaps()  # installing twice must not wrap twice (one line per gap)
    consumer = SimpleNamespace(_committed_offset=defaultdict(lambda: None, {"tp": 9}), _gap=defaultdict(IntervalTree))
    with caplog.at_level(logging.WARNING, logger="streams.worker.faust_fixes"):
        asyncio.run(Consumer._add_gap(consumer, "tp", 10, 15))
    assert caplog.text.count("as a gap") == 1
    assert "offsets 10..15 of tp as a gap (committed 9)" in caplog.text
    assert consumer._gap["tp"].overlaps(10, 16)  # Faust's own bookkeeping is unchanged


def test_seek_to_committed_runs_with_the_flow_stopped_and_leaves_it_stopped():
    """faust-streaming#596: frames delivered while the stream partitions are sought back are cleared from the
    agents' queues by ``flow_control.resume()`` right after, then committed over. With the fence, no frame can be
    delivered during the seek: the flow is stopped before it and stays stopped until Recovery resumes it."""
    fence_seek_to_committed()
    fence_seek_to_committed()  # idempotent
    app = faust.App("fence-test", broker="kafka://127.0.0.1:1")  # never started: no broker is contacted
    consumer = app.consumer
    consumer.resume_flow()
    flow_during_seek = []

    async def seek_to_committed():
        flow_during_seek.append(consumer.flow_active)
        return {}

    consumer.seek_to_committed = seek_to_committed
    asyncio.run(consumer.perform_seek())
    assert flow_during_seek == [False]
    assert not consumer.flow_active and consumer.suspend_flow.is_set()


def test_flow_watchdog_reports_only_a_stop_longer_than_its_limit():
    now = [0.0]
    watchdog = FlowWatchdog(limit_s=180, clock=lambda: now[0])
    assert watchdog.stalled_for(True) is None
    assert watchdog.stalled_for(False) is None  # stopped at t=0
    now[0] = 170.0
    assert watchdog.stalled_for(False) is None  # a long rebalance is not a stall
    now[0] = 181.0
    assert watchdog.stalled_for(False) == 181.0
    assert watchdog.stalled_for(True) is None  # resumed: the clock starts over
    now[0] = 300.0
    assert watchdog.stalled_for(False) is None


class _Event:
    def __init__(self, partition: int):
        self.message = SimpleNamespace(topic="results", partition=partition, timestamp=1_234.5)


def test_a_table_written_from_a_batch_writes_to_the_partition_of_the_event_made_current():
    """faust-streaming#497: outside Faust's per-event iteration a table write has no event and raises. Inside
    as_current_event the write goes to the changelog partition of that event, and the event is current only there."""
    app = faust.App("current-event-test", broker="kafka://127.0.0.1:1")  # never started
    table = app.Table("counts", default=int, partitions=4)
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table.partition_for_key("line-1")
    first, second = _Event(3), _Event(1)
    with as_current_event(first):
        assert current_event() is first
        assert table.partition_for_key("line-1") == 3
        with as_current_event(second):
            assert table.partition_for_key("line-1") == 1
        assert current_event() is first
    assert current_event() is None


FRAMES_0, FRAMES_1, COUNTS_0 = TP("frames", 0), TP("frames", 1), TP("line-counts", 0)


def fetching_consumer(assigned: set[TP]) -> tuple[Consumer, list[tuple[set[TP], float]], list[float]]:
    """A real Faust consumer with its partitions assigned, its broker fetch and its sleep recorded instead of made."""
    refetch_buffered_partitions_promptly()
    refetch_buffered_partitions_promptly()  # installing twice must not wrap twice
    assert not getattr(Consumer._wait_next_records.__wrapped__, "prompt", False)
    app = faust.App("refetch-test", broker="kafka://127.0.0.1:1")  # never started: no broker is contacted
    consumer = app.consumer
    consumer.resume_flow()
    consumer.assignment = lambda: set(assigned)
    consumer._set_active_tps(assigned)
    fetches: list[tuple[set[TP], float]] = []
    sleeps: list[float] = []

    async def getmany(active_partitions, timeout):
        fetches.append((set(active_partitions), timeout))
        return {}

    async def sleep(seconds):
        sleeps.append(seconds)

    consumer._getmany = getmany
    consumer.sleep = sleep
    return consumer, fetches, sleeps


def test_a_partition_held_back_by_a_full_stream_buffer_is_fetched_again_promptly():
    """Faust leaves a partition whose stream buffer is under pressure out of its fetches; the fetcher then waits in a
    fetch of the other partitions for up to the full timeout (1 s), and the agent runs dry long before that. While a
    partition is held back, a fetch waits only BUFFERED_FETCH_WAIT_S, so it is back in the next fetch that soon after
    the buffer drains."""
    consumer, fetches, _ = fetching_consumer({FRAMES_0, FRAMES_1, COUNTS_0})
    asyncio.run(consumer._wait_next_records(1.0))
    assert fetches[-1] == ({FRAMES_0, FRAMES_1, COUNTS_0}, 1.0)  # nothing held back: Faust's own wait

    consumer.on_buffer_full(FRAMES_0)  # Faust's backpressure: the frames queue is under pressure
    asyncio.run(consumer._wait_next_records(1.0))
    assert fetches[-1] == ({FRAMES_1, COUNTS_0}, BUFFERED_FETCH_WAIT_S)

    consumer.on_buffer_drop(FRAMES_0)  # the queue drained: Faust lets the partition back in
    asyncio.run(consumer._wait_next_records(1.0))
    assert fetches[-1] == ({FRAMES_0, FRAMES_1, COUNTS_0}, 1.0)


def test_with_every_partition_held_back_the_fetcher_looks_again_after_the_short_wait_not_a_second():
    consumer, fetches, sleeps = fetching_consumer({FRAMES_0})
    consumer.on_buffer_full(FRAMES_0)
    records, active = asyncio.run(consumer._wait_next_records(1.0))
    assert (records, active, fetches) == ({}, set(), [])  # nothing fetched while Faust holds it back
    assert sleeps == [BUFFERED_FETCH_WAIT_S]  # Faust's own code sleeps 1 s here


def test_a_revoked_partition_left_marked_as_held_back_does_not_shorten_the_wait():
    """A partition revoked while held back stays in Faust's held-back set until its queue drains: it must not make
    an idle worker poll the broker every few milliseconds meanwhile."""
    consumer, fetches, _ = fetching_consumer({FRAMES_0, COUNTS_0})
    consumer.on_buffer_full(FRAMES_1)  # held back, then revoked: not in the assignment
    asyncio.run(consumer._wait_next_records(1.0))
    assert fetches[-1] == ({FRAMES_0, COUNTS_0}, 1.0)


def test_with_the_flow_stopped_the_fetcher_waits_for_the_resume_then_fetches_promptly():
    """Not every 10 ms while the flow is stopped (Faust seeks back to the committed offsets on each empty return of a
    stopped flow): it waits for the resume as Faust does, and the first fetch after it is prompt too."""

    async def scenario():
        # Made inside the loop: Faust's flow events belong to the loop they are made in.
        consumer, fetches, sleeps = fetching_consumer({FRAMES_0, COUNTS_0})
        consumer.on_buffer_full(FRAMES_0)
        consumer.stop_flow()
        waiting = asyncio.ensure_future(consumer._wait_next_records(1.0))
        await asyncio.sleep(0.05)
        assert not waiting.done() and fetches == [] and sleeps == []
        consumer.resume_flow()
        await asyncio.wait_for(waiting, 5)
        return fetches

    assert asyncio.run(scenario()) == [({COUNTS_0}, BUFFERED_FETCH_WAIT_S)]


def test_a_window_restored_from_the_changelog_is_dropped_from_the_store_and_its_partition_note():
    app = faust.App("drop-restored", broker="kafka://127.0.0.1:9", store="memory://")  # built, never started
    table = app.Table("line-stats-10s", default=dict).tumbling(10, expires=120).relative_to_stream().table
    old, kept = ("line-1", (100.0, 109.9)), ("line-1", (110.0, 119.9))
    restored = [
        SimpleNamespace(key=key, value={"frames": n}, message=SimpleNamespace(value=b"x", partition=2))
        for key, n in ((old, 3), (kept, 4))
    ]
    table.data.apply_changelog_batch(restored, to_key=lambda k: k, to_value=lambda v: v)  # as Faust's recovery does
    assert set(table.data.keys()) == {old, kept} and set(table.data._key_partition) == {old, kept}
    drop_restored_window(table, old)
    assert dict(table.data.items()) == {kept: {"frames": 4}}
    assert dict(table.data._key_partition) == {kept: 2}
