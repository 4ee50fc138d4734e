"""1,000 mixed frames: camera -> real Kafka -> Faust worker process -> reject gate, line stats and /metrics.

Every valid frame gets exactly one result; every invalid one a dead letter and a fail-safe reject; reject commands
exist exactly for reject/review decisions and fail-safes; line-stats windows and the worker's Prometheus counters
add up to the frames sent; the worker is still running at the end.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import urllib.request

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from models.checkpoint import load_checkpoint
from models.skeleton import RECIPE
from schemas.frame import FrameMeta
from schemas.records import DeadLetter, InspectionResult, LineHeartbeat, LineStats, RejectCommand
from streams.camera import CameraGateway
from streams.gate import RejectGate
from streams.inspection import UNREADABLE_FRAME
from streams.kafka import topics
from streams.kafka.broker import free_port
from streams.kafka.config import producer_config
from streams.kafka.reader import TopicReader
from streams.kafka.topics import create_topics
from streams.sources import synthetic_frames
from streams.worker.process import WorkerProcess

pytestmark = pytest.mark.integration

TOTAL_FRAMES = 1000
INVALID_EACH = 24  # per kind below, 6 kinds
MAX_FRAME_BYTES = 300_000
SKELETON_CLASSES = tuple(RECIPE["classes"])


def _send_invalid_frames(settings, valid_jpeg: bytes) -> dict[str, str]:
    """Frames that break the contract in every way we know; returns part id -> expected dead-letter reason."""
    producer = Producer(producer_config(settings))
    topic = settings.topic(topics.FRAMES)
    expected = {}

    def send(kind, i, value, reason, drop=None, **override):
        part = f"bad-{kind}-{i}"
        meta = FrameMeta(part_id=part, line_id=settings.line_id, camera_id="cam-x", capture_ts_ns=time.time_ns())
        headers = dict((k, v.decode()) for k, v in meta.to_headers())
        headers.update(override)
        if drop:
            headers.pop(drop)
        producer.produce(topic, value, key=part.encode(), headers=list(headers.items()))
        expected[part] = reason

    junk = os.urandom(2048)
    for i in range(INVALID_EACH):
        send("corrupt", i, junk, "undecodable_image")
        send("truncated", i, valid_jpeg[: len(valid_jpeg) // 3], "undecodable_image")
        send("empty", i, b"", "empty_payload")
        send("oversized", i, b"\xff\xd8" + os.urandom(MAX_FRAME_BYTES + 1000), "oversized_payload")
        send("nocamera", i, valid_jpeg, "missing_headers", drop="camera_id")
        bad = [{"capture_ts_ns": "noon"}, {"content_type": "image/gif"}, {"content_type": "image/x-raw"}][i % 3]
        send("badheader", i, valid_jpeg, "bad_header", **bad)
    assert producer.flush(30) == 0
    return expected


def _metrics(url: str) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple, float]] = collections.defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _latest_windows(records: list[LineStats], window_s: float) -> dict[tuple, LineStats]:
    latest = {}
    for rec in records:  # a window re-published after late records supersedes the earlier one
        if rec.window_s == window_s:
            latest[(rec.line_id, rec.window_start_ts_ns)] = rec
    return latest


def test_mixed_frames_every_frame_accounted_for(kafka_settings, skeleton_model, tmp_path):
    settings = kafka_settings.replace(
        model_path=skeleton_model,
        web_port=free_port(),
        max_batch=8,
        max_frame_bytes=MAX_FRAME_BYTES,
        decision_thresholds="0.3",
        line_travel_ms="600000",  # a burst of 1,000 frames must not make commands late here
        stats_windows_s="2",
        stats_grace_s=1.0,
        model_reload_interval_s=0,
    )
    create_topics(settings)  # the changelog of the 2 s stats table
    gate = RejectGate(settings)
    gate_commands: list[RejectCommand] = []
    stop = threading.Event()
    gate_thread = threading.Thread(target=gate.run, args=(stop, gate_commands.append), daemon=True)
    gate_thread.start()
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready()
        valid_count = TOTAL_FRAMES - 6 * INVALID_EACH
        frames = list(synthetic_frames(valid_count, seed=7, classes=SKELETON_CLASSES))
        camera = CameraGateway(settings, keep_part_labels=True)
        stats = camera.run(iter(frames), fps=None)
        assert (stats.sent, stats.delivered, stats.failed) == (valid_count, valid_count, 0)
        valid_parts = set(stats.part_labels)
        invalid = _send_invalid_frames(settings, frames[0][1])
        assert len(valid_parts) + len(invalid) == TOTAL_FRAMES

        reader = TopicReader(settings, settings.topic(topics.RESULTS))
        result_records = reader.read_until(lambda r: len(r) >= valid_count, timeout_s=180, settle_s=2.0)
        results = [InspectionResult.from_json(r.value) for r in result_records]
        reader.close()
        flagged = {r.part_id for r in results if r.decision != "pass"} | set(invalid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(gate_commands) < len(flagged):
            time.sleep(0.2)
        time.sleep(1.0)  # a duplicate or stray command would arrive now
        stop.set()
        gate_thread.join(10)

        reader = TopicReader(settings, settings.topic(topics.DEAD_LETTERS))
        letters = [
            DeadLetter.from_json(r.value) for r in reader.read_until(lambda r: len(r) >= len(invalid), 60, settle_s=1.0)
        ]
        reader.close()

        reader = TopicReader(settings, settings.topic(topics.LINE_STATS))

        def stats_complete(recs):
            windows = _latest_windows([LineStats.from_json(r.value) for r in recs], 2.0)
            return sum(w.frames for w in windows.values()) >= TOTAL_FRAMES

        line_stats = [LineStats.from_json(r.value) for r in reader.read_until(stats_complete, 120, settle_s=3.0)]
        reader.close()
        ((changelog_topic, _spec),) = topics.changelog_topics(settings)
        reader = TopicReader(settings, changelog_topic)
        changelog = reader.read_until(lambda r: False, timeout_s=3.0)
        reader.close()
        reader = TopicReader(settings, settings.topic(topics.LINE_HEARTBEATS))
        heartbeats = [LineHeartbeat.from_json(r.value) for r in reader.read_until(lambda r: False, timeout_s=3.0)]
        reader.close()
        metrics = _metrics(worker.url)
        assert worker.returncode is None, f"worker died:\n{worker.log_tail()}"

    # Exactly one result per valid part id, none for invalid frames; real model outputs.
    part_ids = [r.part_id for r in results]
    assert len(part_ids) == len(set(part_ids)) == len(valid_parts)
    assert set(part_ids) == valid_parts
    assert {r.model_version for r in results} == {load_checkpoint(skeleton_model)[1].version}
    assert len({r.label for r in results}) >= 3
    assert {r.decision for r in results} >= {"pass", "reject"}
    # Reject commands: exactly the reject/review decisions and one fail-safe per invalid frame, no duplicates.
    by_part = {}
    for cmd in gate_commands:
        assert cmd.part_id not in by_part, f"duplicate reject command for {cmd.part_id}"
        by_part[cmd.part_id] = cmd
    assert set(by_part) == flagged
    assert gate.stats.missed == 0 and gate.stats.stale == 0
    # One gate's verdict commands arrive in the order they were decided, although the worker had several batches
    # in its pipeline at once (fail-safes are decided earlier, at decode, so they are left out of this check).
    decided = [cmd.decided_ts_ns for cmd in gate_commands if cmd.reason != UNREADABLE_FRAME]
    assert decided == sorted(decided)
    for r in results:
        if r.decision != "pass":
            assert (by_part[r.part_id].action, by_part[r.part_id].label) == (r.decision, r.label)
    for part in invalid:
        assert (by_part[part].reason, by_part[part].action) == (UNREADABLE_FRAME, "reject")
    # Heartbeats: every verdict of the gate's line counted once (results and fail-safes), the newest capture time.
    fail_safes = [c for c in gate_commands if c.reason == UNREADABLE_FRAME]
    assert {b.line_id for b in heartbeats} == {settings.line_id}
    assert sum(b.frames for b in heartbeats) == len(results) + len(fail_safes)
    verdicts = [*results, *fail_safes]
    assert max(b.inspected_until_ts_ns for b in heartbeats) == max(
        min(v.capture_ts_ns, v.decided_ts_ns) for v in verdicts
    )
    # Dead letters: exactly the invalid frames, each with its reason.
    assert sorted((d.headers.get("part_id"), d.reason) for d in letters) == sorted(invalid.items())
    # Line stats: the closed 2 s windows of the line add up to every frame, by decision too.
    windows = _latest_windows(line_stats, 2.0).values()
    assert {w.line_id for w in windows} == {settings.line_id}
    assert sum(w.frames for w in windows) == TOTAL_FRAMES
    assert sum(w.unreadable for w in windows) == len(invalid)
    decisions = collections.Counter(r.decision for r in results)
    for decision, count in decisions.items():
        assert sum(w.by_decision.get(decision, 0) for w in windows) == count
    # The stats table is written once per batch of records, not once per frame, and each write goes to the changelog
    # partition of the line's records (where the worker owning them recovers the table from).
    assert 0 < len(changelog) <= TOTAL_FRAMES // 5
    assert {r.partition for r in changelog} == {r.partition for r in result_records}
    # /metrics: the same totals.
    frames_total = metrics["defectstream_frames_total"]
    assert sum(frames_total.values()) == TOTAL_FRAMES
    line = ("line", settings.line_id)
    assert frames_total[(("decision", "unreadable"), line)] == len(invalid)
    for decision, count in decisions.items():
        assert frames_total[(("decision", decision), line)] == count
    assert sum(metrics["defectstream_dead_letters_total"].values()) == len(invalid)
    assert sum(metrics["defectstream_reject_commands_total"].values()) == len(flagged)
    assert metrics["defectstream_batch_size_count"][()] > 0
