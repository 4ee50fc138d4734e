"""Camera -> real Kafka -> Faust worker process -> reject gate, with the real model code path."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

from models.checkpoint import load_checkpoint
from models.skeleton import RECIPE
from schemas.frame import FrameMeta
from schemas.records import DeadLetter, InspectionResult, RejectCommand
from streams.camera import CameraGateway
from streams.gate import RejectGate
from streams.inspection import UNREADABLE_FRAME
from streams.kafka import topics
from streams.kafka.broker import free_port
from streams.kafka.config import producer_config
from streams.kafka.reader import TopicReader
from streams.sources import synthetic_frames
from streams.worker.process import WorkerProcess

pytestmark = pytest.mark.integration

VALID_FRAMES = 200
SKELETON_CLASSES = tuple(RECIPE["classes"])


def _send_invalid_frames(settings) -> dict[str, str]:
    """Frames that break the contract in different ways; returns part id -> expected dead-letter reason."""
    producer = Producer(producer_config(settings))
    topic = settings.topic(topics.FRAMES)

    def headers(part):
        return FrameMeta(
            part_id=part, line_id=settings.line_id, camera_id="cam-x", capture_ts_ns=time.time_ns()
        ).to_headers()

    producer.produce(topic, b"", key=b"bad-empty", headers=headers("bad-empty"))
    producer.produce(topic, b"\xff\xd8\xff\xe0 truncated jpeg", key=b"bad-trunc", headers=headers("bad-trunc"))
    no_camera = [h for h in headers("bad-headers") if h[0] != "camera_id"]
    producer.produce(topic, next(synthetic_frames(1))[1], key=b"bad-headers", headers=no_camera)
    assert producer.flush(30) == 0
    return {
        "bad-empty": "undecodable_image",
        "bad-trunc": "undecodable_image",
        "bad-headers": "missing_headers",
    }


def test_every_frame_gets_exactly_one_verdict_and_rejects_match(kafka_settings, skeleton_model, tmp_path):
    settings = kafka_settings.replace(model_path=skeleton_model, web_port=free_port(), max_batch=8)
    gate = RejectGate(settings)
    gate_commands: list[RejectCommand] = []
    stop = threading.Event()
    gate_thread = threading.Thread(target=gate.run, args=(stop, gate_commands.append), daemon=True)
    gate_thread.start()
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready()
        camera = CameraGateway(settings)
        stats = camera.run(synthetic_frames(VALID_FRAMES, seed=7, classes=SKELETON_CLASSES), fps=None)
        assert (stats.sent, stats.delivered, stats.failed) == (VALID_FRAMES, VALID_FRAMES, 0)
        valid_parts = set(stats.part_labels)
        invalid = _send_invalid_frames(settings)

        results_reader = TopicReader(settings, settings.topic(topics.RESULTS))
        raw_results = results_reader.read_until(lambda r: len(r) >= VALID_FRAMES, timeout_s=120, settle_s=2.0)
        results_reader.close()
        deadline = time.monotonic() + 30
        expected_rejects = None
        while time.monotonic() < deadline:
            results = [InspectionResult.from_json(r.value) for r in raw_results]
            expected_rejects = {r.part_id for r in results if r.decision == "reject"} | set(invalid)
            if len(gate_commands) >= len(expected_rejects):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # a duplicate or stray command would arrive now
        stop.set()
        gate_thread.join(10)

        dlq_reader = TopicReader(settings, settings.topic(topics.DEAD_LETTERS))
        letters = [
            DeadLetter.from_json(r.value) for r in dlq_reader.read_until(lambda r: len(r) >= 3, 30, settle_s=1.0)
        ]
        dlq_reader.close()
        assert worker.returncode is None, f"worker died:\n{worker.log_tail()}"

    # Exactly one result per valid part id, none for invalid frames.
    part_ids = [r.part_id for r in results]
    assert len(part_ids) == len(set(part_ids)) == VALID_FRAMES
    assert set(part_ids) == valid_parts
    # Verdicts are real model outputs from the loaded checkpoint, not constants.
    assert {r.model_version for r in results} == {load_checkpoint(skeleton_model)[1].version}
    assert len({r.label for r in results}) >= 3
    assert all(r.decision == ("pass" if r.label == "ok" else "reject") for r in results)
    # Reject commands match non-OK verdicts one to one (plus one fail-safe per invalid frame).
    commands_by_part = {}
    for cmd in gate_commands:
        assert cmd.part_id not in commands_by_part, f"duplicate reject command for {cmd.part_id}"
        commands_by_part[cmd.part_id] = cmd
    assert set(commands_by_part) == expected_rejects
    for r in results:
        if r.decision == "reject":
            assert commands_by_part[r.part_id].reason == r.label
    for part in invalid:
        assert commands_by_part[part].reason == UNREADABLE_FRAME
    # Dead letters: exactly the invalid frames, with their reasons; nothing for valid frames.
    assert sorted((d.headers.get("part_id"), d.reason) for d in letters) == sorted(invalid.items())
