"""The worker's web endpoints on a running worker: POST /predict, /metrics, and a hot reload under load."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

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
        # Frames keep coming until well after the swap, however long loading and warming v2 up takes (it once
        # outlasted a fixed 240-frame stream on a slower CPU, and every result was v1's).
        camera = CameraGateway(settings, keep_part_labels=True)
        stop_sending = threading.Event()
        sender = threading.Thread(
            target=camera.run, args=(itertools.cycle(frames),), kwargs={"fps": 60, "stop": stop_sending}
        )
        sender.start()
        reader = TopicReader(settings, settings.topic(topics.RESULTS))
        seen = reader.read_until(lambda r: len(r) >= 60, timeout_s=60)
        model, meta = load_checkpoint(model_path)
        v2 = v1 + "-retrained"
        save_checkpoint(tmp_path / "next.pt", model, dataclasses.replace(meta, version=v2))
        os.replace(tmp_path / "next.pt", model_path)  # atomic: the worker never sees half a file
        status, outcome = _post(worker.url + "/reload", b"", "application/json")
        assert status == 200 and outcome["reloaded"] and outcome["model_version"] == v2, outcome
        time.sleep(1.0)  # ~60 more frames, for v2
        stop_sending.set()
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


HUNG_RELOAD_WARM_UP = """\
# Fault injection for tests/integration/test_worker_web.py: every model loaded after the first hangs in its first
# call, as a hung driver or runtime call would, so a hot reload's warm-up never returns.
import threading

from models.engines import torch_engine

_real_init = torch_engine.TorchEngine.__init__
_real_predict = torch_engine.TorchEngine.predict
_engines = []


def _init(self, *args, **kwargs):
    _real_init(self, *args, **kwargs)
    _engines.append(self)


def _predict(self, batch):
    if self is not _engines[0]:
        threading.Event().wait()
    return _real_predict(self, batch)


torch_engine.TorchEngine.__init__ = _init
torch_engine.TorchEngine.predict = _predict
"""


def test_a_worker_whose_reload_hung_still_exits_on_sigterm(kafka_settings, skeleton_model, tmp_path, monkeypatch):
    """The hung warm-up sits on the new model's inference threads, which Python's exit would wait for until the
    supervisor's SIGKILL."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HUNG_RELOAD_WARM_UP)
    root = str(Path(__file__).resolve().parents[2])  # sitecustomize runs before the worker's directory is on sys.path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), root, os.environ.get("PYTHONPATH")])))
    settings = kafka_settings.replace(
        model_path=skeleton_model, web_port=free_port(), model_reload_interval_s=0, model_reload_timeout_s=2.0
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        status, outcome = _post(worker.url + "/reload", b"", "application/json")
        assert status == 409 and "DEFECTSTREAM_MODEL_RELOAD_TIMEOUT_S" in outcome["error"], outcome
        started = time.monotonic()
        returncode = worker.stop(timeout_s=60)
        stopped_s = time.monotonic() - started
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert returncode == 0, log[-3000:]  # not killed: -9
    exits = [line for line in log.splitlines() if "s after the stop:" in line]
    assert len(exits) == 1 and "'infer_0'" in exits[0] and "exiting without them" in exits[0], log[-3000:]
    assert stopped_s < 45, stopped_s
