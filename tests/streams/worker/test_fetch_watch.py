"""The fetch watchdog: partitions with lag and no read for too long, while the flow is on."""

from collections import namedtuple

import faust

from streams.worker.fetch_watch import FetchWatchdog, consumer_state, lagging_partitions

TP = namedtuple("TP", "topic partition")
A, B = TP("frames", 0), TP("frames", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lag_without_reads_past_the_limit_is_a_stall():
    clock = Clock()
    dog = FetchWatchdog(limit_s=60, clock=clock)
    for t in (0, 30, 60):
        clock.now = t
        assert dog.stalled_for(fetching=True, lagging=True, read_offsets={A: 5}) is None
    clock.now = 61
    assert dog.stalled_for(fetching=True, lagging=True, read_offsets={A: 5}) == 61


def test_any_read_restarts_the_count():
    clock = Clock()
    dog = FetchWatchdog(limit_s=60, clock=clock)
    dog.stalled_for(fetching=True, lagging=True, read_offsets={A: 5, B: None})
    clock.now = 50
    assert dog.stalled_for(fetching=True, lagging=True, read_offsets={A: 5, B: 0}) is None  # B read its first
    clock.now = 100
    assert dog.stalled_for(fetching=True, lagging=True, read_offsets={A: 5, B: 0}) is None  # 50 s since that read
    clock.now = 111
    assert dog.stalled_for(fetching=True, lagging=True, read_offsets={A: 5, B: 0}) == 61


def test_no_lag_or_not_fetching_is_never_a_stall():
    """An idle line (nothing to read) does not count, nor does a worker that is not fetching and waiting for input
    (a stopped flow, recovery, frames queued or in flight: backpressure), and the count starts again after either."""
    clock = Clock()
    dog = FetchWatchdog(limit_s=60, clock=clock)
    for t, fetching, lagging in ((0, True, False), (100, False, True), (200, True, False), (300, True, True)):
        clock.now = t
        assert dog.stalled_for(fetching=fetching, lagging=lagging, read_offsets={A: 5}) is None
    clock.now = 359
    assert dog.stalled_for(fetching=True, lagging=True, read_offsets={A: 5}) is None
    clock.now = 361
    assert dog.stalled_for(fetching=True, lagging=True, read_offsets={A: 5}) == 61


def test_lagging_partitions_compare_the_highwater_with_the_next_offset_to_read():
    # Highwater = offset of the next record to be written; A read up to 9 of 10 records, B all of them, C nothing
    # yet with its early records gone to retention, D nothing yet and nothing retained.
    C, D = TP("frames", 2), TP("frames", 3)
    read = {A: 8, B: 9, C: None, D: None}
    assert lagging_partitions(read, {A: 10, B: 10, C: 50, D: 40}, {C: 30, D: 40}) == [A, C]
    assert lagging_partitions({A: None}, {A: None}, {}) == []  # highwater unknown: no claim


def test_consumer_state_reports_faust_and_aiokafka_or_says_why_not():
    app = faust.App("fetch-watch-test", broker="kafka://127.0.0.1:1")  # never started: no broker is contacted
    tp = app.consumer._new_topicpartition("frames", 0)
    app.consumer.pause_partitions({tp})
    state = consumer_state(app, {tp}, {})
    assert state["faust_paused"] == ["frames[0]"]
    assert state["read_offsets"] == {"frames[0]": None}
    assert "aiokafka_error" in state  # no aiokafka consumer in an app never started
