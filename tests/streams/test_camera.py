import logging
import time

from confluent_kafka import Producer

from schemas.frame import FrameMeta
from streams.camera import DELIVERY_FAILED, NOT_IN_KAFKA_BY_DEADLINE, REFUSED, CameraGateway, PendingFrames
from streams.kafka.broker import free_port
from streams.kafka.config import MAX_MESSAGE_BYTES, producer_config
from streams.settings import Settings


def _meta(part_id: str) -> FrameMeta:
    return FrameMeta(part_id=part_id, line_id="line-1", camera_id="cam-1", capture_ts_ns=0)


class _Recorder:
    """An ``on_unconfirmed`` handler that notes what it was told and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[FrameMeta, str, int]] = []

    def __call__(self, meta: FrameMeta, reason: str) -> None:
        self.calls.append((meta, reason, time.time_ns()))


def _gateway_without_broker(on_unconfirmed, **settings) -> CameraGateway:
    # Nothing listens on the port: the state of a gateway whose broker (or the partition's leader) is down.
    unreachable = Settings.from_env().replace(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", **settings)
    return CameraGateway(unreachable, on_unconfirmed=on_unconfirmed)


def _discard(gateway: CameraGateway) -> None:
    gateway.producer.purge()
    gateway.producer.flush(1)


def test_pending_frames_are_overdue_once_in_deadline_order_unless_settled_first():
    pending = PendingFrames()
    tickets = {
        part_id: pending.add(_meta(part_id), deadline) for part_id, deadline in (("c", 30), ("a", 10), ("b", 20))
    }
    again = pending.add(_meta("a"), 40)  # the same part id sent again is a frame of its own
    assert pending.settle(tickets["b"]) is True  # acknowledged before its deadline: never overdue
    assert pending.overdue(9) == []
    assert [(m.part_id, d) for m, d in pending.overdue(30)] == [("a", 10), ("c", 30)]
    assert pending.overdue(35) == [] and len(pending) == 1
    assert pending.settle(tickets["a"]) is False  # acknowledged after it was reported: not pending any more
    assert [(m.part_id, d) for m, d in pending.overdue(10**18)] == [("a", 40)]
    assert pending.settle(again) is False and len(pending) == 0 and pending.overdue(10**18) == []


def test_settled_frames_do_not_pile_up_while_their_deadlines_are_far_out():
    pending = PendingFrames()
    for i in range(10_000):
        pending.settle(pending.add(_meta(f"p-{i}"), 10**18))
        if i % 7 == 0:
            pending.add(_meta(f"stuck-{i}"), 10**18 + i)  # always something pending, as at a steady high rate
    assert len(pending) == 1429 and len(pending._deadlines) <= 2 * len(pending) + 1025
    assert len(pending.overdue(2 * 10**18)) == 1429


def test_frames_that_cannot_reach_kafka_are_reported_once_each_at_their_deadline(caplog):
    unconfirmed = _Recorder()
    gateway = _gateway_without_broker(unconfirmed, line_travel_ms="300")
    try:
        explicit = time.time_ns() + 100_000_000  # a header deadline wins over the line's travel time
        gateway.send(b"jpeg", part_id="part-header", gate_deadline_ts_ns=explicit)
        sent = {}
        for i in range(3):
            before = time.time_ns()
            sent[gateway.send(b"jpeg", part_id=f"part-{i}")] = before
            time.sleep(0.01)
        with caplog.at_level(logging.WARNING, logger="streams.camera"):
            assert gateway.flush(timeout_s=0.8) == 4  # still queued: a frame past its deadline is not dropped
            assert gateway.flush(timeout_s=0.2) == 4
    finally:
        _discard(gateway)  # they fail now ("purged"): a frame reported overdue is not reported again
    reported = {meta.part_id: (reason, at) for meta, reason, at in unconfirmed.calls}
    assert len(unconfirmed.calls) == 4 and set(reported) == {*sent, "part-header"}
    assert all(reason.startswith(NOT_IN_KAFKA_BY_DEADLINE) for reason, _ in reported.values())
    # On time: within a poll slice and the scheduling of a loaded machine, long before the flush gave up.
    for part_id, before in sent.items():
        deadline = before + 300_000_000
        assert deadline <= reported[part_id][1] < deadline + 250_000_000, part_id
    assert explicit <= reported["part-header"][1] < explicit + 250_000_000
    assert gateway.stats.unconfirmed_by_deadline == 4 and gateway.stats.delivered == 0
    assert "part-header not in Kafka by its gate deadline" in caplog.text  # the first of the spell, by name
    assert "3 more frames not in Kafka by their gate deadline" in caplog.text  # the rest summed up by the flush


def test_run_reports_a_stuck_frame_while_it_waits_for_the_next_one():
    unconfirmed = _Recorder()
    gateway = _gateway_without_broker(unconfirmed, line_travel_ms="150")
    frames = [("ok", b"jpeg", "image/jpeg")] * 2
    started = time.time_ns()
    try:
        gateway.run(frames, fps=1.0, flush_timeout_s=0.0)  # the second frame is sent ~1 s after the first
    finally:
        _discard(gateway)
    first, reason, reported = unconfirmed.calls[0]
    assert first.part_id.endswith("-0000001") and reason.startswith(NOT_IN_KAFKA_BY_DEADLINE)
    assert started + 150_000_000 <= reported < started + 500_000_000  # not at the next frame, ~1 s later
    # The second frame was still within its deadline when run() returned; the purge above failed it.
    assert [r.split(":")[0] for _, r, _ in unconfirmed.calls[1:]] == [DELIVERY_FAILED]
    assert gateway.stats.unconfirmed_by_deadline == 1


def test_a_frame_waiting_for_room_in_the_producers_queue_is_reported_at_its_deadline():
    unconfirmed = _Recorder()
    gateway = _gateway_without_broker(unconfirmed, line_travel_ms="300")
    # A queue of one frame, given up after 1 s: the state of a camera whose broker has been down for a while.
    gateway.producer = Producer(
        {**producer_config(gateway.settings), "queue.buffering.max.messages": 1, "message.timeout.ms": 1000}
    )
    try:
        gateway.send(b"jpeg", part_id="queued")
        before = time.time_ns()
        gateway.send(b"jpeg", part_id="waiting")  # returns once librdkafka gave "queued" up and took this one
        returned = time.time_ns()
        gateway.flush(timeout_s=2.0)
    finally:
        _discard(gateway)
    reported = {meta.part_id: (reason.split(":")[0], at) for meta, reason, at in unconfirmed.calls}
    assert len(unconfirmed.calls) == 2  # each once, although both then failed
    assert reported["waiting"][0] == NOT_IN_KAFKA_BY_DEADLINE
    assert before + 300_000_000 <= reported["waiting"][1] < min(returned, before + 550_000_000)
    assert reported["queued"][0] == NOT_IN_KAFKA_BY_DEADLINE
    assert gateway.stats.failed == 2 and gateway.stats.unconfirmed_by_deadline == 2


def test_a_frame_the_producer_refuses_is_reported_at_once_and_a_failing_handler_stops_nothing(caplog):
    def failing_handler(meta: FrameMeta, reason: str) -> None:
        told.append((meta.part_id, reason))
        raise RuntimeError("the PLC bridge's own fault")

    told: list[tuple[str, str]] = []
    gateway = _gateway_without_broker(failing_handler)
    try:
        with caplog.at_level(logging.ERROR, logger="streams.camera"):
            gateway.send(b"x" * MAX_MESSAGE_BYTES, part_id="too-big")
            gateway.send(b"jpeg", part_id="next")  # taken after the handler failed: queued, nothing reported yet
        assert len(told) == 1 and told[0][0] == "too-big" and told[0][1].startswith(REFUSED)
        assert "on_unconfirmed failed for frame too-big" in caplog.text
        assert gateway.stats.sent == 2 and gateway.stats.failed == 1 and len(gateway.producer) == 1
    finally:
        _discard(gateway)


def test_frames_librdkafka_gives_up_on_before_their_deadline_are_reported_as_failed_and_logged_per_spell(caplog):
    unconfirmed = _Recorder()
    gateway = _gateway_without_broker(unconfirmed, line_travel_ms="60000")
    given_up = [f"given-up-{i}" for i in range(200)]
    try:
        for part_id in given_up:
            gateway.send(b"jpeg", part_id=part_id)
        # librdkafka gives them all up at once, as it does when its message.timeout.ms runs out in an outage.
        gateway.producer.purge()
        with caplog.at_level(logging.ERROR):
            gateway.flush(timeout_s=1.0)
    finally:
        _discard(gateway)
    assert [(m.part_id, r.split(":")[0]) for m, r, _ in unconfirmed.calls] == [(p, DELIVERY_FAILED) for p in given_up]
    assert gateway.stats.failed == 200 and gateway.stats.unconfirmed_by_deadline == 0
    # The first by name, then one line for the rest: not 200 lines.
    failures = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(failures) == 2, failures
    assert failures[0].startswith("frame given-up-0 not delivered")
    assert failures[1].startswith("199 more frames not delivered") and "given-up-199" in failures[1]


def test_frames_the_broker_acknowledges_in_time_are_not_reported(kafka_settings):
    frames = 40
    unconfirmed = _Recorder()
    # Far-out deadlines: the first frames wait for the producer id, on a machine busy with other tests.
    gateway = CameraGateway(kafka_settings.replace(line_travel_ms="30000"), on_unconfirmed=unconfirmed)
    for _ in range(frames):
        gateway.send(b"jpeg")
    assert gateway.flush(timeout_s=30) == 0
    assert gateway.stats.delivered == frames and unconfirmed.calls == []
    assert gateway.stats.unconfirmed_by_deadline == 0


def test_a_long_running_gateway_keeps_bounded_samples_and_part_ids_only_when_asked(kafka_settings, monkeypatch):
    from streams import quantiles

    monkeypatch.setattr(quantiles, "RECENT_SAMPLES", 5)
    settings = kafka_settings.replace(line_travel_ms="30000")
    plain, keeping = CameraGateway(settings), CameraGateway(settings, keep_part_labels=True)
    for gateway in (plain, keeping):
        gateway.run(iter([("ok", b"jpeg", "image/jpeg")] * 20))
        assert gateway.stats.delivered == 20 and len(gateway.stats.delivery_ms) == 5
    assert plain.stats.part_labels == {}
    assert len(keeping.stats.part_labels) == 20 and set(keeping.stats.part_labels.values()) == {"ok"}
