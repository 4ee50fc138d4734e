"""LineWatermarks: what a worker's heartbeats tell each gate, from the outputs of real inspected batches."""

import time

from schemas.frame import LINE_ID
from schemas.records import LineHeartbeat
from streams.worker.heartbeats import LineWatermarks
from tests.streams.frames import flat_jpeg, incoming_frame, make_inspector


def test_heartbeats_report_the_newest_delivered_capture_time_per_line_once():
    now = time.time_ns()
    inspector = make_inspector()
    marks = LineWatermarks("w1")
    marks.delivered(
        inspector.inspect(
            [
                incoming_frame("a", flat_jpeg(200), capture=now - 3_000_000_000),  # pass: a result, no command
                incoming_frame("b", flat_jpeg(30), offset=1, capture=now - 2_000_000_000),  # reject: both
                incoming_frame("c", b"not an image", offset=2, capture=now - 1_000_000_000),  # fail-safe only
                incoming_frame("d", flat_jpeg(200), offset=3, capture=now - 5_000_000_000, **{LINE_ID: "L2"}),
            ]
        )
    )
    beats = {b.line_id: b for b in marks.heartbeats()}
    assert beats["L1"].inspected_until_ts_ns == now - 1_000_000_000 and beats["L1"].frames == 3
    assert beats["L2"].inspected_until_ts_ns == now - 5_000_000_000 and beats["L2"].frames == 1
    assert {b.gate_id for b in beats.values()} == {"L1", "L2"} and {b.worker_id for b in beats.values()} == {"w1"}
    for beat in beats.values():
        assert LineHeartbeat.from_json(beat.to_json()) == beat
    assert marks.heartbeats() == []  # nothing delivered since: no heartbeat, and the gates see the line fall behind


def test_frames_without_a_line_and_clocks_ahead_do_not_move_a_watermark():
    inspector = make_inspector()
    marks = LineWatermarks("w1")
    ahead = time.time_ns() + 3600 * 10**9  # a camera whose clock is an hour fast
    outgoing = inspector.inspect(
        [
            incoming_frame("x", b"junk", **{LINE_ID: None}),  # dead letter + a fail-safe no gate listens for
            incoming_frame("y", flat_jpeg(200), offset=1, capture=ahead),
        ]
    )
    before = time.time_ns()
    marks.delivered(outgoing)
    (beat,) = marks.heartbeats()
    assert beat.line_id == "L1" and beat.frames == 1
    assert beat.inspected_until_ts_ns <= before  # capped at the decision time, not an hour ahead
