import asyncio
import os
import threading

from streams.kafka import topics
from streams.worker.metrics import WorkerMetrics
from streams.worker.reload import ModelReloader
from streams.worker.stages import InspectionStages
from tests.streams.frames import FixedEngine, flat_jpeg, incoming_frame, make_inspector


class HangingWarmUpEngine(FixedEngine):
    """Its warm-up (all-zero batches) hangs until ``go`` is set: a hung model or driver call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.concurrent_batches = 1
        self.go = threading.Event()
        self.hung_threads: set[threading.Thread] = set()

    def predict(self, batch):
        if not batch.any():
            self.hung_threads.add(threading.current_thread())
            assert self.go.wait(timeout=30)
        return super().predict(batch)


def model_file(tmp_path, content: str):
    """A model path whose fingerprint changes with each write (the reloader reads artifact.json's size and mtime)."""
    path = tmp_path / "model"
    path.mkdir(exist_ok=True)
    artifact = path / "artifact.json"
    artifact.write_text(content)
    stamp = int(artifact.stat().st_mtime_ns) + len(content) * 1_000_000_000
    os.utime(artifact, ns=(stamp, stamp))
    return path


def reloads(metrics: WorkerMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("defectstream_model_reloads_total", {"outcome": outcome}) or 0.0


def served_version(stages: InspectionStages) -> str:
    async def one_frame():
        outgoing, _ = await stages.run([incoming_frame("p", flat_jpeg(220))])
        return [o.record.model_version for o in outgoing if o.role == topics.RESULTS]

    (version,) = asyncio.run(one_frame())
    return version


def test_a_changed_model_is_swapped_in_once_and_an_unchanged_one_is_left_alone(tmp_path):
    stages = InspectionStages(make_inspector(FixedEngine(version="v1")))
    metrics = WorkerMetrics()
    path = model_file(tmp_path, "v1")
    loaded = []

    def load():
        loaded.append(FixedEngine(version=f"v{len(loaded) + 2}"))
        return loaded[-1]

    reloader = ModelReloader(stages, metrics, model_path=path, load=load, max_batch=2, timeout_s=10)
    assert asyncio.run(reloader.reload()) == {"reloaded": False, "model_version": "v1"}
    model_file(tmp_path, "v2 changed")
    outcome = asyncio.run(reloader.reload())
    assert outcome == {"reloaded": True, "previous_version": "v1", "model_version": "v2"}
    assert asyncio.run(reloader.reload())["reloaded"] is False  # same file: not loaded again
    assert len(loaded) == 1 and reloads(metrics, "ok") == 1
    assert served_version(stages) == "v2"
    stages.shutdown()


def test_a_reload_whose_warm_up_hangs_is_refused_in_time_and_the_old_model_serves_on(tmp_path, caplog):
    stages = InspectionStages(make_inspector(FixedEngine(version="v1")))
    metrics = WorkerMetrics()
    path = model_file(tmp_path, "v1")
    hung = HangingWarmUpEngine(version="hung")
    engines = iter([hung, FixedEngine(version="v3")])
    reloader = ModelReloader(stages, metrics, model_path=path, load=lambda: next(engines), max_batch=2, timeout_s=0.5)
    model_file(tmp_path, "v2 hangs")

    async def reload_then_inspect():
        outcome = await asyncio.wait_for(reloader.reload(), 10)
        outgoing, _ = await stages.run([incoming_frame("p", flat_jpeg(220))])
        again = await reloader.reload()  # the same file is not tried again: it would hang another thread
        return outcome, [o.record.model_version for o in outgoing if o.role == topics.RESULTS], again

    outcome, versions, again = asyncio.run(reload_then_inspect())
    assert outcome["reloaded"] is False and outcome["model_version"] == "v1"
    assert "within 0.5 s" in outcome["error"] and "DEFECTSTREAM_MODEL_RELOAD_TIMEOUT_S" in outcome["error"]
    assert versions == ["v1"]
    assert again == {"reloaded": False, "model_version": "v1"}
    assert reloads(metrics, "failed") == 1

    # The reload lock was let go: the next model file is swapped in.
    model_file(tmp_path, "v3 is fine")
    assert asyncio.run(reloader.reload())["model_version"] == "v3"
    assert served_version(stages) == "v3"

    # Should the hung call ever return, its threads end and the model is not swapped in.
    assert hung.hung_threads
    hung.go.set()
    for _ in range(100):
        if "finished after all" in caplog.text:
            break
        threading.Event().wait(0.05)
    assert "finished after all" in caplog.text
    assert served_version(stages) == "v3"
    stages.shutdown()
    for thread in hung.hung_threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_a_load_that_fails_with_its_own_timeout_error_is_reported_as_that_not_as_the_reload_timeout(tmp_path):
    stages = InspectionStages(make_inspector(FixedEngine(version="v1")))
    metrics = WorkerMetrics()

    def load():
        raise TimeoutError("timed out reading the artifact from the file server")

    reloader = ModelReloader(
        stages, metrics, model_path=model_file(tmp_path, "v1"), load=load, max_batch=1, timeout_s=60
    )
    outcome = asyncio.run(reloader.reload(force=True))
    stages.shutdown()
    assert outcome == {
        "reloaded": False,
        "error": "timed out reading the artifact from the file server",
        "model_version": "v1",
    }
    assert reloads(metrics, "failed") == 1
