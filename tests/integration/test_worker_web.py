"""The worker's web endpoints on a running worker: POST /predict, /metrics, and a hot reload under load."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from models.checkpoint import load_checkpoint, save_checkpoint
from models.skeleton import RECIPE
from schemas.records import InspectionResult
from streams.camera import CameraGateway
from streams.kafka import topics
from streams.kafka.broker import free_port
from streams.kafka.reader import TopicReader
from streams.sources import synthetic_frames
from streams.worker.process import WorkerProcess

pytestmark = pytest.mark.integration


def _post(url: str, body: bytes, content_type: str = "image/jpeg") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_predict_metrics_and_hot_reload_without_dropping_frames(kafka_settings, skeleton_model, tmp_path):
    model_path = tmp_path / "model.pt"
    shutil.copy(skeleton_model, model_path)
    settings = kafka_settings.replace(
        model_path=model_path, web_port=free_port(), max_frame_bytes=100_000, model_reload_interval_s=0
    )
    v1 = load_checkpoint(model_path)[1].version
    frames = list(synthetic_frames(240, seed=3, classes=tuple(RECIPE["classes"])))
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready()
        # POST /predict: a result for an image, clear 4xx for the rest; nothing is published.
        status, body = _post(worker.url + "/predict?part_id=adhoc-1&line_id=line-9", frames[0][1])
        assert status == 200, body
        result = InspectionResult.from_dict(body)
        assert (result.part_id, result.line_id, result.model_version) == ("adhoc-1", "line-9", v1)
        assert _post(worker.url + "/predict", b"\x00not an image")[0] == 400
        assert _post(worker.url + "/predict", b"")[1]["reason_code"] == "empty_payload"
        assert _post(worker.url + "/predict", frames[0][1], "image/gif")[0] == 415
        assert _post(worker.url + "/predict", os.urandom(150_000))[0] == 413
        # A burst of ad-hoc checks: a few at a time are inspected, the rest refused at once, none queued.
        start = threading.Barrier(24)
        answers: list[int] = []

        def check() -> None:
            start.wait()
            answers.append(_post(worker.url + "/predict", frames[1][1])[0])

        checkers = [threading.Thread(target=check) for _ in range(24)]
        for t in checkers:
            t.start()
        for t in checkers:
            t.join()
        assert set(answers) == {200, 503} and len(answers) == 24, answers
        with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert f'model_version="{v1}"' in text and "defectstream_frames_total" in text
        # GC pauses are measured in the serving process (the start-up objects are frozen out of collection first).
        gc_counts = [
            line for line in text.splitlines() if line.startswith('defectstream_gc_pause_seconds_count{generation="0"}')
        ]
        assert gc_counts and float(gc_counts[0].split()[-1]) > 0, gc_counts

        # Hot reload while frames stream: a new model version is put at the model path and swapped in.
        camera = CameraGateway(settings)
        sender = threading.Thread(target=camera.run, args=(iter(frames),), kwargs={"fps": 60})
        sender.start()
        reader = TopicReader(settings, settings.topic(topics.RESULTS))
        seen = reader.read_until(lambda r: len(r) >= 60, timeout_s=60)
        model, meta = load_checkpoint(model_path)
        v2 = v1 + "-retrained"
        save_checkpoint(tmp_path / "next.pt", model, dataclasses.replace(meta, version=v2))
        os.replace(tmp_path / "next.pt", model_path)  # atomic: the worker never sees half a file
        status, outcome = _post(worker.url + "/reload", b"", "application/json")
        assert status == 200 and outcome["reloaded"] and outcome["model_version"] == v2, outcome
        sender.join(60)
        sent = set(camera.stats.part_labels)
        seen += reader.read_until(
            lambda r: len({InspectionResult.from_json(x.value).part_id for x in seen + r}) >= len(sent), 60
        )
        reader.close()
        # A corrupt file at the model path is refused; the worker keeps serving v2.
        model_path.write_bytes(b"half a checkpoint")
        status, outcome = _post(worker.url + "/reload", b"", "application/json")
        assert status == 409 and outcome["model_version"] == v2
        with urllib.request.urlopen(worker.url + "/healthz", timeout=5) as resp:
            assert json.loads(resp.read())["model_version"] == v2
        assert worker.returncode is None, worker.log_tail()

    results = [InspectionResult.from_json(r.value) for r in seen]
    assert {r.part_id for r in results} == sent  # no frame dropped across the swap
    versions = [r.model_version for r in sorted(results, key=lambda r: r.decided_ts_ns)]
    assert set(versions) == {v1, v2}
    assert versions.index(v2) > 0 and v1 not in versions[versions.index(v2) :]  # one switch, never back
