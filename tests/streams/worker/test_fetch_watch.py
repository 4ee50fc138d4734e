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


def observe(dog, clock, t, *, fetching=True, idle=True, lagging=(A,), read=None):
    clock.now = t
    return dog.stalled(fetching=fetching, idle=idle, lagging=lagging, read_offsets=read or {A: 5, B: 7})


def test_a_lagging_partition_nothing_reads_while_the_worker_waits_for_input_is_reported():
    clock = Clock()
    dog = FetchWatchdog(limit_s=60, clock=clock)
    for t in (0, 5, 30, 65):  # the first observation only records offsets; the count starts at 5
        assert observe(dog, clock, t) == {}
    assert observe(dog, clock, 66) == {A: 61}


def test_a_partition_left_behind_while_the_worker_reads_others_is_reported():
    """The worker is busy (not idle) but reads B every time: A, with lag and no read, is stuck."""
    clock = Clock()
    dog = FetchWatchdog(limit_s=60, clock=clock)
    for t in range(0, 70, 5):  # A's count starts at 5, the first observation after offsets were recorded
        assert observe(dog, clock, t, idle=False, read={A: 5, B: 7 + t}) == {}
    assert observe(dog, clock, 71, idle=False, read={A: 5, B: 1000}) == {A: 66}


def test_a_read_or_no_lag_ends_the_count():
    clock = Clock()
    dog = FetchWatchdog(limit_s=60, clock=clock)
    observe(dog, clock, 0)
    observe(dog, clock, 5)
    assert observe(dog, clock, 50, read={A: 6, B: 7}) == {}  # A read one: its count ends
    assert observe(dog, clock, 100, read={A: 6, B: 7}) == {}  # and starts again here
    assert observe(dog, clock, 150, lagging=()) == {}  # caught up
    assert observe(dog, clock, 200) == {}
    assert observe(dog, clock, 261) == {A: 61}


def test_a_worker_blocked_as_a_whole_or_not_fetching_restarts_every_count():
    """Backpressure (busy, nothing read anywhere: a slow model, deliveries being retried) and a stopped flow (the flow
    watchdog's case) are not this watchdog's stalls; when they end, a partition still waiting gets a full limit."""
    clock = Clock()
    dog = FetchWatchdog(limit_s=60, clock=clock)
    observe(dog, clock, 0)
    observe(dog, clock, 5)
    assert observe(dog, clock, 50, idle=False) == {}  # busy, and nothing moved since 5
    assert observe(dog, clock, 100, idle=False) == {}
    assert observe(dog, clock, 105, idle=False, read={A: 5, B: 8}) == {}  # B moves: A's count starts again here
    assert observe(dog, clock, 160, fetching=False, read={A: 5, B: 9}) == {}
    assert observe(dog, clock, 200, read={A: 5, B: 9}) == {}
    assert observe(dog, clock, 261, read={A: 5, B: 9}) == {A: 61}


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
