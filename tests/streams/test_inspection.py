"""FrameInspector: every frame yields records, never nothing. A fixed-output engine drives the branches."""

import json

import cv2
import numpy as np
import pytest

from schemas.frame import FrameMeta, headers_to_dict
from schemas.records import DeadLetter, InspectionResult, RejectCommand
from streams.inspection import UNREADABLE_FRAME, FrameInspector, IncomingFrame
from streams.kafka import topics


class FixedEngine:
    """Answers with a per-image label chosen by the image's mean brightness, so tests control verdicts."""

    def __init__(self):
        self.class_names = ["ok", "scratch"]
        self.input_size = 16
        self.mean = [0.0, 0.0, 0.0]
        self.std = [1 / 255, 1 / 255, 1 / 255]
        self.version = "fixed-1"
        self.precision = "fp32"
        self.device = "cpu"

    def predict(self, batch):
        bright = batch.mean(axis=(1, 2, 3)) > 127
        return np.stack([np.where(bright, 0.9, 0.2), np.where(bright, 0.1, 0.8)], axis=1)


def _frame(part: str, value: bytes | None, offset: int = 0, **header_overrides) -> IncomingFrame:
    headers = headers_to_dict(FrameMeta(part_id=part, line_id="L1", camera_id="C1", capture_ts_ns=1).to_headers())
    headers.update(header_overrides)
    headers = {k: v for k, v in headers.items() if v is not None}
    return IncomingFrame(value, headers, "t.frames", 0, offset, received_ts_ns=2)


def _jpeg(level: int) -> bytes:
    return cv2.imencode(".jpg", np.full((24, 24, 3), level, np.uint8))[1].tobytes()


def _by_role(outgoing):
    out = {}
    for o in outgoing:
        out.setdefault(o.role, []).append(o)
    return out


def test_ok_passes_and_defect_is_rejected():
    inspector = FrameInspector(FixedEngine(), ok_class="ok", worker_id="w1")
    out = _by_role(inspector.inspect([_frame("good", _jpeg(220)), _frame("bad", _jpeg(30))]))
    results = {
        InspectionResult.from_json(o.value).part_id: InspectionResult.from_json(o.value) for o in out[topics.RESULTS]
    }
    assert results["good"].decision == "pass" and results["good"].label == "ok"
    assert results["bad"].decision == "reject" and results["bad"].label == "scratch"
    assert results["bad"].confidence == pytest.approx(0.8)
    rejects = [RejectCommand.from_json(o.value) for o in out[topics.REJECT_COMMANDS]]
    assert [(r.part_id, r.reason, r.gate_id) for r in rejects] == [("bad", "scratch", "L1")]
    assert out[topics.REJECT_COMMANDS][0].key == b"L1"  # keyed by gate: ordered per gate
    assert topics.DEAD_LETTERS not in out


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_frame("empty", b""), "undecodable_image"),
        (_frame("garbage", b"\x00\x01junk"), "undecodable_image"),
        (_frame("truncated", _jpeg(100)[:50]), "undecodable_image"),
        (_frame("nohdr", _jpeg(100), line_id=None), "missing_headers"),
        (_frame("badts", _jpeg(100), capture_ts_ns="noon"), "bad_header"),
    ],
)
def test_invalid_frame_gives_dead_letter_and_fail_safe_reject(frame, reason):
    inspector = FrameInspector(FixedEngine(), ok_class="ok", worker_id="w1")
    out = _by_role(inspector.inspect([frame, _frame("fine", _jpeg(220), offset=9)]))
    letter = DeadLetter.from_json(out[topics.DEAD_LETTERS][0].value)
    assert letter.reason == reason and letter.source_offset == frame.offset
    assert len(out[topics.DEAD_LETTERS]) == 1
    reject = RejectCommand.from_json(out[topics.REJECT_COMMANDS][0].value)
    assert reject.reason == UNREADABLE_FRAME and reject.part_id == frame.headers["part_id"]
    # The valid frame in the same batch is still inspected.
    assert [json.loads(o.value)["part_id"] for o in out[topics.RESULTS]] == ["fine"]


def test_fail_safe_covers_every_frame():
    inspector = FrameInspector(FixedEngine(), ok_class="ok", worker_id="w1")
    out = _by_role(inspector.fail_safe([_frame("a", _jpeg(1)), _frame("b", _jpeg(1))], "inspection_error", "boom"))
    assert len(out[topics.DEAD_LETTERS]) == 2 and len(out[topics.REJECT_COMMANDS]) == 2


def test_ok_class_must_exist():
    with pytest.raises(ValueError, match="ok class 'good'"):
        FrameInspector(FixedEngine(), ok_class="good", worker_id="w")


def test_an_unexpected_decode_error_costs_only_that_frame(monkeypatch):
    import streams.inspection as inspection

    real = inspection.decode_image

    def flaky(data, min_side=None):
        if data == b"boom":
            raise MemoryError("image too large")
        return real(data, min_side=min_side)

    monkeypatch.setattr(inspection, "decode_image", flaky)
    inspector = FrameInspector(FixedEngine(), ok_class="ok", worker_id="w1")
    out = _by_role(inspector.inspect([_frame("bad", b"boom"), _frame("good", _jpeg(220), offset=1)]))
    assert DeadLetter.from_json(out[topics.DEAD_LETTERS][0].value).reason == "decode_error"
    assert [InspectionResult.from_json(o.value).part_id for o in out[topics.RESULTS]] == ["good"]
