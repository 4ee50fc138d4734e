"""A retraining-samples topic that refuses the worker's samples for good, on the real broker: the worker drops them
(logged, counted) and goes on inspecting, instead of stopping on a batch it can never deliver."""

from __future__ import annotations

import time
import urllib.request

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from prometheus_client.parser import text_string_to_metric_families

from models.skeleton import RECIPE
from schemas.records import InspectionResult
from streams.camera import CameraGateway
from streams.kafka import topics
from streams.kafka.broker import free_port
from streams.kafka.config import admin_config
from streams.kafka.reader import TopicReader
from streams.sources import synthetic_frames
from streams.worker.process import WorkerProcess

pytestmark = pytest.mark.integration

FRAMES = 60


def _counter(url: str, name: str) -> dict[str, float]:
    """Per ``reason`` label, the value of counter ``name`` on a worker's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_samples_the_topic_refuses_are_dropped_and_every_frame_still_gets_its_result(
    kafka_settings, skeleton_model, tmp_path
):
    # Every pass is audited, so many frames carry a sample; the topic takes 2 KiB per record, less than any sample
    # (the image is in it), as a topic made with a small limit refuses a larger camera's frames.
    settings = kafka_settings.replace(model_path=skeleton_model, web_port=free_port(), retrain_audit_rate=1.0)
    samples_topic = settings.topic(topics.RETRAINING_SAMPLES)
    admin = AdminClient(admin_config(settings))
    resource = ConfigResource(
        "topic",
        samples_topic,
        incremental_configs=[ConfigEntry("max.message.bytes", "2048", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([resource])[resource].result(30)

    frames = list(synthetic_frames(FRAMES, seed=11, classes=tuple(RECIPE["classes"])))
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready()
        camera = CameraGateway(settings, keep_part_labels=True)
        camera.run(iter(frames), fps=60)
        sent = set(camera.stats.part_labels)
        assert len(sent) == FRAMES
        records = TopicReader(settings, settings.topic(topics.RESULTS)).read_until(
            lambda r: {InspectionResult.from_json(x.value).part_id for x in r} >= sent, timeout_s=90
        )
        results = {r.part_id: r for r in map(InspectionResult.from_json, (x.value for x in records))}
        assert set(results) >= sent
        # The policy's rules (streams.policy.RetrainingPolicy) with every pass audited.
        samples = sum(r.confidence < 0.8 or r.decision in ("pass", "review") for r in results.values())
        assert samples > 0
        # A batch's drops are counted once all of its records have their delivery reports, a moment after its
        # results may be readable.
        deadline = time.monotonic() + 15
        while (
            sum((dropped := _counter(worker.url, "defectstream_retraining_samples_dropped_total")).values()) < samples
        ):
            assert time.monotonic() < deadline, dropped
            time.sleep(0.2)
        assert worker.proc.poll() is None, worker.log_tail()
        log = worker.log_tail(400)
    assert dropped == {**dict.fromkeys(dropped, 0.0), "MSG_SIZE_TOO_LARGE": samples}
    assert "retraining-samples record of part" in log and "MSG_SIZE_TOO_LARGE" in log
    assert TopicReader(settings, samples_topic).read_until(lambda r: False, timeout_s=3) == []
