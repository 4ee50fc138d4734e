"""FrameInspector: every frame yields records, never nothing. A fixed-output engine drives the branches."""

import json
import time

import cv2
import numpy as np
import pytest

from schemas import contracts
from schemas.records import DeadLetter, InspectionResult, RejectCommand, RetrainingSample
from streams.inspection import UNREADABLE_FRAME, FrameInspector
from streams.kafka import topics
from streams.policy import DeadlinePolicy, DecisionPolicy, RetrainingPolicy
from streams.settings import Settings
from tests.streams.frames import FixedEngine, flat_jpeg, incoming_frame, make_inspector


def _by_role(outgoing):
    out = {}
    for o in outgoing:
        out.setdefault(o.role, []).append(o)
    return out


def _all_conform(outgoing):
    for o in outgoing:
        assert contracts.errors(o.record.kind, json.loads(o.value)) == [], o.record.kind


def test_pass_reject_and_review():
    inspector = make_inspector()
    out = inspector.inspect(
        [
            incoming_frame("good", flat_jpeg(220)),
            incoming_frame("bad", flat_jpeg(30)),
            incoming_frame("unsure", flat_jpeg(120)),
        ]
    )
    _all_conform(out)
    by = _by_role(out)
    results = {
        InspectionResult.from_json(o.value).part_id: InspectionResult.from_json(o.value) for o in by[topics.RESULTS]
    }
    assert results["good"].decision == "pass" and results["good"].label == "ok"
    assert results["bad"].decision == "reject" and results["bad"].label == "scratch"
    assert results["bad"].confidence == pytest.approx(0.8)
    assert results["unsure"].decision == "review" and results["unsure"].confidence == pytest.approx(0.55)
    assert [t["label"] for t in results["bad"].top_k] == ["scratch", "ok"]
    assert results["bad"].model_name == "fixednet" and results["bad"].batch_size == 3
    assert all(o.key == b"L1" for o in by[topics.RESULTS])  # results keyed by line for the stats agent
    commands = sorted((RejectCommand.from_json(o.value) for o in by[topics.REJECT_COMMANDS]), key=lambda c: c.part_id)
    assert [(c.part_id, c.action, c.reason, c.label, c.gate_id) for c in commands] == [
        ("bad", "reject", "defect", "scratch", "L1"),
        ("unsure", "review", "low_confidence", "scratch", "L1"),
    ]
    assert all(o.key == b"L1" for o in by[topics.REJECT_COMMANDS])  # keyed by gate: ordered per gate
    assert topics.DEAD_LETTERS not in by


def test_per_class_threshold_changes_the_decision():
    inspector = make_inspector(thresholds="0.5,scratch=0.85")
    by = _by_role(inspector.inspect([incoming_frame("bad", flat_jpeg(30))]))
    assert InspectionResult.from_json(by[topics.RESULTS][0].value).decision == "review"


def test_deadline_from_travel_time_and_header_and_late_flag():
    inspector = make_inspector(deadlines=DeadlinePolicy.from_spec("500,L1=300"))
    now = time.time_ns()
    fresh, stale = (
        incoming_frame("fresh", flat_jpeg(30), capture=now),
        incoming_frame("stale", flat_jpeg(30), capture=now - 10**9),
    )
    header = incoming_frame("hdr", flat_jpeg(30), capture=now, gate_deadline_ts_ns=str(now - 1))
    by = _by_role(inspector.inspect([fresh, stale, header]))
    results = {r.part_id: r for r in (InspectionResult.from_json(o.value) for o in by[topics.RESULTS])}
    assert results["fresh"].deadline_ts_ns == now + 300_000_000 and not results["fresh"].late
    assert results["stale"].late and results["hdr"].late and results["hdr"].deadline_ts_ns == now - 1
    commands = {c.part_id: c for c in (RejectCommand.from_json(o.value) for o in by[topics.REJECT_COMMANDS])}
    # Late verdicts still produce their command, flagged: never a silent pass.
    assert not commands["fresh"].late and commands["stale"].late and commands["hdr"].late


def test_retraining_samples_carry_the_frame_and_why():
    inspector = make_inspector(retraining=RetrainingPolicy(low_confidence_below=0.85, audit_rate=1.0))
    frames = [
        incoming_frame("good", flat_jpeg(220)),
        incoming_frame("bad", flat_jpeg(30)),
        incoming_frame("unsure", flat_jpeg(120)),
    ]
    by = _by_role(inspector.inspect(frames))
    samples = {s.part_id: s for s in (RetrainingSample.from_json(o.value) for o in by[topics.RETRAINING_SAMPLES])}
    assert samples["good"].selected_because == ["audit"]
    assert samples["bad"].selected_because == ["low_confidence"]
    assert samples["unsure"].selected_because == ["low_confidence", "review"]
    assert samples["bad"].image() == frames[1].value
    none = make_inspector(retraining=RetrainingPolicy(low_confidence_below=0.0, audit_rate=0.0))
    assert topics.RETRAINING_SAMPLES not in _by_role(none.inspect([incoming_frame("good", flat_jpeg(220))]))


@pytest.mark.parametrize("reviews", [True, False])
def test_review_sampling_follows_the_setting(reviews):
    settings = Settings(
        decision_thresholds="0.6", retrain_low_confidence_below=0.0, retrain_audit_rate=0.0, retrain_reviews=reviews
    )
    by = _by_role(
        FrameInspector.from_settings(FixedEngine(), settings).inspect([incoming_frame("unsure", flat_jpeg(120))])
    )
    assert [o.record.decision for o in by[topics.RESULTS]] == ["review"]
    assert len(by.get(topics.RETRAINING_SAMPLES, [])) == (1 if reviews else 0)


def _corrupt_scan(jpeg: bytes) -> bytes:
    """An end-of-image marker in the middle of the image data: OpenCV decodes it as whole, greying the rest."""
    start = jpeg.index(b"\xff\xda")  # start of scan
    middle = (start + len(jpeg)) // 2
    return jpeg[:middle] + b"\xff\xd9" + jpeg[middle + 2 :]


def _textured_jpeg(size: int = 32) -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (incoming_frame("corrupt", _corrupt_scan(_textured_jpeg())), "undecodable_image"),
        (incoming_frame("bmp", cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))[1].tobytes()), "undecodable_image"),
        # int() would take it; +500 ms travel time then makes a number json refuses: the fail-safe itself failed.
        (incoming_frame("hugets", flat_jpeg(100), capture_ts_ns="9" * 4300), "bad_header"),
        (incoming_frame("hugedl", flat_jpeg(100), gate_deadline_ts_ns="9" * 4300), "bad_header"),
        (incoming_frame("empty", b""), "empty_payload"),
        (incoming_frame("none", None), "empty_payload"),
        (incoming_frame("big", b"\xff\xd8" + bytes(5000)), "oversized_payload"),
        (incoming_frame("garbage", b"\x00\x01junk"), "undecodable_image"),
        (incoming_frame("truncated", flat_jpeg(100)[:50]), "undecodable_image"),
        (incoming_frame("nohdr", flat_jpeg(100), line_id=None), "missing_headers"),
        (incoming_frame("badts", flat_jpeg(100), capture_ts_ns="noon"), "bad_header"),
        (incoming_frame("gif", flat_jpeg(100), content_type="image/gif"), "bad_header"),
        (incoming_frame("raw", b"\x00" * 10, content_type="image/x-raw", raw_shape="4x4x3"), "undecodable_image"),
    ],
)
def test_invalid_frame_gives_dead_letter_and_fail_safe_reject(frame, reason):
    inspector = make_inspector(max_frame_bytes=4000)
    out = inspector.inspect([frame, incoming_frame("fine", flat_jpeg(220), offset=9)])
    _all_conform(out)
    by = _by_role(out)
    letter = DeadLetter.from_json(by[topics.DEAD_LETTERS][0].value)
    assert letter.reason == reason and letter.source_offset == frame.offset
    assert letter.payload() == (frame.value or b"") and letter.headers == frame.headers
    assert len(by[topics.DEAD_LETTERS]) == 1
    reject = RejectCommand.from_json(by[topics.REJECT_COMMANDS][0].value)
    assert reject.reason == UNREADABLE_FRAME and reject.action == "reject" and reject.label is None
    assert reject.part_id == frame.headers["part_id"]
    # The valid frame in the same batch is still inspected.
    assert [json.loads(o.value)["part_id"] for o in by[topics.RESULTS]] == ["fine"]


def test_a_fail_safe_takes_only_contract_timestamps_and_says_when_no_gate_may_act(caplog):
    received = time.time_ns()
    frame = incoming_frame("p-1", flat_jpeg(100), capture_ts_ns="9" * 4300, line_id="L1 ")
    frame = type(frame)(frame.value, frame.headers, frame.topic, 0, 0, received_ts_ns=received)
    by = _by_role(make_inspector(deadlines=DeadlinePolicy.from_spec("500")).inspect([frame]))
    reject = RejectCommand.from_json(by[topics.REJECT_COMMANDS][0].value)
    assert (reject.capture_ts_ns, reject.deadline_ts_ns) == (received, received + 500_000_000)
    assert reject.line_id == "L1 "  # as sent: the gate of L1 does not take it, and the log says so
    assert "'L1 ', not a valid line id: no gate may act on it" in caplog.text


def test_a_frame_declaring_more_pixels_than_allowed_is_not_decoded():
    png = cv2.imencode(".png", np.zeros((1200, 1000), np.uint8))[1].tobytes()
    by = _by_role(make_inspector(max_frame_pixels=1_000_000).inspect([incoming_frame("big", png)]))
    letter = DeadLetter.from_json(by[topics.DEAD_LETTERS][0].value)
    assert letter.reason == "undecodable_image" and "1000x1200 pixels is above the limit of 1000000" in letter.detail
    assert RejectCommand.from_json(by[topics.REJECT_COMMANDS][0].value).reason == UNREADABLE_FRAME
    by = _by_role(make_inspector(max_frame_pixels=1_200_000).inspect([incoming_frame("big", png)]))
    assert topics.DEAD_LETTERS not in by and len(by[topics.RESULTS]) == 1


def test_dead_letter_keeps_only_the_hash_of_a_large_payload():
    inspector = make_inspector(dead_letter_payload_max_bytes=8)
    letter = DeadLetter.from_json(
        _by_role(inspector.inspect([incoming_frame("g", b"0123456789junk")]))[topics.DEAD_LETTERS][0].value
    )
    assert letter.payload_b64 is None and letter.payload_bytes == 14 and len(letter.payload_sha256) == 64


def test_raw_frames_are_inspected():
    inspector = make_inspector()
    gray = np.full((20, 30, 1), 230, np.uint8).tobytes()
    frame = incoming_frame("raw", gray, content_type="image/x-raw", raw_shape="20x30x1")
    result = InspectionResult.from_json(_by_role(inspector.inspect([frame]))[topics.RESULTS][0].value)
    assert result.label == "ok"


def test_fail_safe_covers_every_frame():
    inspector = make_inspector()
    out = _by_role(
        inspector.fail_safe(
            [incoming_frame("a", flat_jpeg(1)), incoming_frame("b", flat_jpeg(1))], "inspection_error", "boom"
        )
    )
    assert len(out[topics.DEAD_LETTERS]) == 2 and len(out[topics.REJECT_COMMANDS]) == 2


def test_ok_class_and_threshold_classes_must_exist():
    with pytest.raises(ValueError, match="ok class 'good'"):
        FrameInspector(FixedEngine(), decisions=DecisionPolicy("good"), worker_id="w")
    with pytest.raises(ValueError, match="unknown classes \\['scrach'\\]"):
        make_inspector(thresholds="0.5,scrach=0.9")


def test_swap_engine_tags_results_and_refuses_a_mismatched_model():
    inspector = make_inspector()
    inspector.swap_engine(FixedEngine(version="fixed-2"))
    result = InspectionResult.from_json(
        _by_role(inspector.inspect([incoming_frame("a", flat_jpeg(220))]))[topics.RESULTS][0].value
    )
    assert result.model_version == "fixed-2"
    with pytest.raises(ValueError, match="ok class"):
        inspector.swap_engine(FixedEngine(version="fixed-3", class_names=("good", "scratch")))
    assert inspector.serving.version == "fixed-2"


def test_an_unexpected_decode_error_costs_only_that_frame(monkeypatch):
    import streams.inspection as inspection

    real = inspection.decode_image
    boom = flat_jpeg(10)

    def flaky(data, min_side=None, **kwargs):
        if data == boom:
            raise MemoryError("image too large")
        return real(data, min_side=min_side, **kwargs)

    monkeypatch.setattr(inspection, "decode_image", flaky)
    out = _by_role(
        make_inspector().inspect([incoming_frame("bad", boom), incoming_frame("good", flat_jpeg(220), offset=1)])
    )
    assert DeadLetter.from_json(out[topics.DEAD_LETTERS][0].value).reason == "decode_error"
    assert [InspectionResult.from_json(o.value).part_id for o in out[topics.RESULTS]] == ["good"]


def test_a_batch_keeps_the_model_it_was_decoded_for_across_a_swap():
    inspector = make_inspector()
    decoded = inspector.decode([incoming_frame("a", flat_jpeg(220)), incoming_frame("bad", b"")])
    inspector.swap_engine(FixedEngine(version="fixed-2"))  # lands between the decode and inference stages
    by = _by_role(inspector.decide(inspector.infer(decoded)))
    assert [InspectionResult.from_json(o.value).model_version for o in by[topics.RESULTS]] == ["fixed-1"]
    assert len(by[topics.DEAD_LETTERS]) == 1
    later = _by_role(inspector.inspect([incoming_frame("b", flat_jpeg(220))]))
    assert InspectionResult.from_json(later[topics.RESULTS][0].value).model_version == "fixed-2"


def test_a_batch_with_no_readable_frame_skips_the_model():
    class NoCalls(FixedEngine):
        def predict(self, batch):
            raise AssertionError("the model must not run on an empty batch")

    inspector = make_inspector(NoCalls())
    inferred = inspector.infer(
        inspector.decode([incoming_frame("bad", b""), incoming_frame("junk", b"0123456789junk")])
    )
    assert inferred.probs is None
    by = _by_role(inspector.decide(inferred))
    assert len(by[topics.DEAD_LETTERS]) == 2 and len(by[topics.REJECT_COMMANDS]) == 2
    assert topics.RESULTS not in by


def test_a_non_finite_model_output_fails_safe():
    class Broken(FixedEngine):
        def predict(self, batch):
            out = super().predict(batch)
            out[0] = np.nan  # the first frame of the batch
            return out

    by = _by_role(
        make_inspector(Broken()).inspect(
            [incoming_frame("nan", flat_jpeg(220)), incoming_frame("fine", flat_jpeg(220), offset=1)]
        )
    )
    assert [InspectionResult.from_json(o.value).part_id for o in by[topics.RESULTS]] == ["fine"]
    (letter,) = [DeadLetter.from_json(o.value) for o in by[topics.DEAD_LETTERS]]
    assert letter.reason == "non_finite_output" and letter.headers["part_id"] == "nan"
    (command,) = [RejectCommand.from_json(o.value) for o in by[topics.REJECT_COMMANDS]]
    assert (command.part_id, command.reason, command.action) == ("nan", UNREADABLE_FRAME, "reject")


def test_the_decide_stage_hands_over_records_already_encoded(monkeypatch):
    """The worker runs decide in its own thread and sends from the event loop: nothing may be encoded on the loop."""
    inspector = make_inspector()
    inferred = inspector.infer(
        inspector.decode([incoming_frame("bad", flat_jpeg(30)), incoming_frame("good", flat_jpeg(220))])
    )
    out = inspector.decide(inferred)
    encoded = {id(o): o.value for o in out}

    def no_encoding(self):
        raise AssertionError("a record was encoded after the decide stage")

    for kind in (InspectionResult, RejectCommand):
        monkeypatch.setattr(kind, "to_json", no_encoding)
    assert all(o.value == encoded[id(o)] for o in out)  # what the event loop reads and sends
    assert {o.role for o in out} == {topics.RESULTS, topics.REJECT_COMMANDS}
