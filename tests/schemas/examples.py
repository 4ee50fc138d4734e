"""One valid record of each type, and builders of results and commands with fields overridden: shared by the
schema tests and the worker tests that need well-formed records."""

from schemas.records import (
    DeadLetter,
    InspectionResult,
    LineCounts,
    LineHeartbeat,
    LineStats,
    RejectCommand,
    RetrainingSample,
)

TOP_K = [{"label": "ok", "probability": 0.9}, {"label": "scratch", "probability": 0.1}]


def result_record(**kw):
    base = dict(
        part_id="p",
        line_id="l",
        camera_id="c",
        capture_ts_ns=1,
        deadline_ts_ns=5,
        model_name="resnet50",
        model_version="v",
        label="ok",
        confidence=0.9,
        top_k=TOP_K,
        decision="pass",
        late=False,
        timings_ms={"queue_wait": 1.0, "decode": 1.0, "inference": 2.0, "total_since_capture": 4.0},
        batch_size=1,
        worker_id="w",
        decided_ts_ns=2,
    )
    return InspectionResult(**{**base, **kw})


def command_record(**kw):
    base = dict(
        part_id="p",
        line_id="l",
        gate_id="g",
        action="reject",
        reason="defect",
        label="scratch",
        late=False,
        capture_ts_ns=1,
        decided_ts_ns=2,
        deadline_ts_ns=3,
        model_version="v",
    )
    return RejectCommand(**{**base, **kw})


EXAMPLES = {
    "inspection_result": result_record(),
    "reject_command": command_record(),
    "dead_letter": DeadLetter(
        reason="undecodable_image",
        detail="x",
        headers={"part_id": "p"},
        payload_bytes=3,
        payload_sha256="0" * 64,
        payload_b64="YWJj",
        source_topic="t",
        source_partition=0,
        source_offset=7,
        worker_id="w",
        received_ts_ns=9,
    ),
    "line_stats": LineStats(
        line_id="l",
        window_s=10.0,
        window_start_ts_ns=0,
        window_end_ts_ns=10_000_000_000,
        frames=3,
        by_decision={"pass": 2, "reject": 1},
        by_class={"ok": 2, "scratch": 1},
        defect_rate=1 / 3,
        latency_p50_ms=20.0,
        latency_p95_ms=40.0,
    ),
    "line_counts": LineCounts(
        line_id="l",
        frames=3,
        by_decision={"pass": 1, "reject": 1},
        by_class={"ok": 1, "scratch": 1},
        unreadable=1,
        late=1,
        latency_buckets={"0": 1, "64": 1},
    ),
    "retraining_sample": RetrainingSample(
        part_id="p",
        line_id="l",
        camera_id="c",
        capture_ts_ns=1,
        content_type="image/jpeg",
        image_b64="YWJj",
        model_version="v",
        label="scratch",
        confidence=0.4,
        top_k=TOP_K,
        decision="review",
        selected_because=["low_confidence", "review"],
    ),
    "line_heartbeat": LineHeartbeat(
        line_id="l", gate_id="g", worker_id="w", inspected_until_ts_ns=1, frames=8, sent_ts_ns=2
    ),
}
