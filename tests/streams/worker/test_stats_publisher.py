import asyncio

from schemas.records import LineStats
from streams.worker import stats
from streams.worker.stats_publisher import ClosedWindowPublisher

GRACE_S = 2.0


def _counts(frames: int) -> dict:
    return {**stats.empty(), "frames": frames, "by_decision": {"pass": frames}}


class ScriptedKafka:
    """Takes every record, except those it is told to refuse (one answer each, in order)."""

    def __init__(self, refusals: list[BaseException | None] | None = None):
        self.refusals = list(refusals or [])
        self.taken: list[tuple[str, LineStats]] = []

    async def publish(self, line_id: str, record: LineStats) -> BaseException | None:
        error = self.refusals.pop(0) if self.refusals else None
        if error is None:
            self.taken.append((line_id, record))
        return error


def _round(publisher: ClosedWindowPublisher, entries: list, now: float) -> None:
    asyncio.run(publisher.publish_closed(entries, now))


def test_a_window_is_published_once_after_its_grace_and_again_only_when_its_count_changes():
    kafka = ScriptedKafka()
    publisher = ClosedWindowPublisher(GRACE_S, kafka.publish)
    entry = (10.0, ("line-1", (100.0, 110.0)), _counts(5))
    _round(publisher, [entry], now=111.0)  # closed, but inside the grace period
    assert kafka.taken == []
    _round(publisher, [entry], now=112.5)
    _round(publisher, [entry], now=113.5)
    assert [(line, r.frames, r.window_start_ts_ns) for line, r in kafka.taken] == [("line-1", 5, 100_000_000_000)]
    late = (10.0, ("line-1", (100.0, 110.0)), _counts(6))  # a late batch's counts reached the table
    _round(publisher, [late], now=114.5)
    assert [r.frames for _, r in kafka.taken] == [5, 6]


def test_a_window_kafka_did_not_take_is_published_again_next_round():
    kafka = ScriptedKafka(refusals=[TimeoutError("no acknowledgement from Kafka in time")])
    publisher = ClosedWindowPublisher(GRACE_S, kafka.publish)
    entries = [(10.0, ("line-1", (100.0, 110.0)), _counts(5)), (60.0, ("line-1", (60.0, 120.0)), _counts(9))]
    _round(publisher, entries, now=200.0)
    # The first was refused, the second taken: the refusal costs only its own window.
    assert [(r.window_s, r.frames) for _, r in kafka.taken] == [(60.0, 9)]
    _round(publisher, entries, now=201.0)
    assert [(r.window_s, r.frames) for _, r in kafka.taken] == [(60.0, 9), (10.0, 5)]
    _round(publisher, entries, now=202.0)
    assert len(kafka.taken) == 2


def test_an_expired_window_is_forgotten_so_one_that_comes_back_is_published_again():
    kafka = ScriptedKafka()
    publisher = ClosedWindowPublisher(GRACE_S, kafka.publish)
    entry = (10.0, ("line-1", (100.0, 110.0)), _counts(3))
    _round(publisher, [entry], now=150.0)
    _round(publisher, [], now=151.0)  # the table dropped it
    _round(publisher, [entry], now=152.0)  # e.g. restored from its changelog after a rebalance
    assert [r.frames for _, r in kafka.taken] == [3, 3]


def test_windows_past_their_stay_are_returned_for_removal_not_published():
    kafka = ScriptedKafka()
    publisher = ClosedWindowPublisher(GRACE_S, kafka.publish, keep_s=120.0)
    restored = [
        (10.0, ("line-1", (100.0, 110.0)), _counts(4)),  # ends 110: its stay is over at 230
        (60.0, ("line-1", (120.0, 180.0)), _counts(7)),  # ends 180: in its stay until 300
    ]
    past = asyncio.run(publisher.publish_closed(restored, now=230.0))
    assert past == [(10.0, ("line-1", (100.0, 110.0)))]
    assert [(r.window_s, r.frames) for _, r in kafka.taken] == [(60.0, 7)]
    assert asyncio.run(publisher.publish_closed(restored[1:], now=299.0)) == []
    assert asyncio.run(publisher.publish_closed(restored[1:], now=300.0)) == [(60.0, ("line-1", (120.0, 180.0)))]
    assert len(kafka.taken) == 1
