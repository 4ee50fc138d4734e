"""Fixes for faust-streaming defects that lose frames, and the alarm for Faust's gap marking."""

import asyncio
import logging
from collections import defaultdict
from types import SimpleNamespace

import faust
import pytest
from faust.streams import current_event
from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from streams.worker.faust_fixes import FlowWatchdog, as_current_event, fence_seek_to_committed, log_offset_gaps


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
