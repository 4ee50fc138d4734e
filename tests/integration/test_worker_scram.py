"""The worker itself (Faust) over the local broker's SASL/SCRAM listener: the settings that reach the confluent-kafka
clients must reach Faust too, or a plant with an authenticated cluster gets a worker that never connects."""

from __future__ import annotations

import pytest

from models.skeleton import RECIPE
from schemas.records import InspectionResult
from streams.camera import CameraGateway
from streams.kafka import topics
from streams.kafka.broker import free_port
from streams.kafka.reader import TopicReader
from streams.sources import synthetic_frames
from streams.worker.process import WorkerProcess

pytestmark = pytest.mark.integration


def test_worker_inspects_frames_over_sasl_scram(scram_settings, skeleton_model, tmp_path):
    scram = scram_settings.replace(model_path=skeleton_model, web_port=free_port(), model_reload_interval_s=0)
    worker = WorkerProcess(scram.replace(worker_id="worker-scram"), tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        camera = CameraGateway(scram, keep_part_labels=True)
        camera.run(synthetic_frames(5, seed=3, classes=tuple(RECIPE["classes"])))
        assert camera.stats.delivered == 5
        reader = TopicReader(scram, scram.topic(topics.RESULTS))
        try:
            records = reader.read_until(lambda r: len(r) >= 5, timeout_s=60)
        finally:
            reader.close()
        assert {InspectionResult.from_json(r.value).part_id for r in records} == set(camera.stats.part_labels)
        assert worker.returncode is None, worker.log_tail()
    finally:
        worker.stop()
