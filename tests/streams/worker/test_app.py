import pytest

from streams.settings import Settings
from streams.worker.app import EXIT_TOPICS_NOT_READY, check_pipeline_limits, check_topics


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_batch": 0}, "max_batch must be at least 1"),
        ({"max_wait_s": 0.0}, "max_wait_s must be above 0"),
        ({"max_batches_in_flight": 0}, "max_batches_in_flight must be at least 1"),
        ({"inference_streams": 0}, "inference_streams must be at least 1"),
        ({"decode_threads": 0}, "decode_threads must be at least 1"),
        ({"heartbeat_interval_s": 0.0}, "heartbeat_interval_s must be above 0"),
    ],
)
def test_batch_limits_the_agent_cannot_work_with_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        check_pipeline_limits(Settings().replace(**change))
    check_pipeline_limits(Settings())  # the defaults pass


@pytest.mark.parametrize("pin", [False, True])
def test_the_worker_loads_its_engine_with_the_pinning_and_streams_settings(monkeypatch, tmp_path, pin):
    from models import engines
    from streams.worker import app

    asked = {}

    class Engine:
        input_size, version, name, device, concurrent_batches = 8, "v", "fake", "cpu", 1

        def predict(self, batch):
            return batch

    def load(path, **kwargs):
        asked.update(kwargs)
        return Engine()

    monkeypatch.setattr(engines, "load_engine", load)
    env = {"DEFECTSTREAM_PIN_INFERENCE_THREADS": str(pin).lower(), "DEFECTSTREAM_INFERENCE_STREAMS": "3"}
    app.load_engine(Settings.from_env(env, model_path=tmp_path))
    assert asked["cpu_pinning"] is pin
    assert asked["streams"] == 3


def test_the_worker_runs_every_batch_size_it_can_take_on_its_inference_threads_before_it_serves(
    skeleton_model, tmp_path
):
    import threading

    from streams.worker import app

    settings = Settings.from_env(
        {"DEFECTSTREAM_MAX_BATCH": "5"},
        model_path=skeleton_model,
        cache_dir=tmp_path,
        kafka_bootstrap_servers="127.0.0.1:9",  # the app is built, never started: nothing connects
    )
    engine = app.load_engine(settings)  # the skeleton checkpoint (torch): one batch at a time, one inference thread
    calls: list[tuple[str, int]] = []
    predict = engine.predict
    engine.predict = lambda batch: (calls.append((threading.current_thread().name, len(batch))), predict(batch))[1]
    assert calls == []  # loading alone runs nothing through the engine
    app.create_app(settings, engine, producer=object())
    assert [size for _, size in calls] == [1, 2, 3, 4, 5]  # streams: test_engine_warmup, threads: test_stages
    assert all(name.startswith("infer") for name, _ in calls)


@pytest.mark.integration
def test_a_worker_missing_a_stats_changelog_exits_naming_it(kafka_settings, caplog, monkeypatch):
    from streams.worker import app

    monkeypatch.setattr(app, "TOPIC_CHECK_RETRY_S", 0.1)
    check_topics(kafka_settings)  # created by the fixture: nothing to say
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "CRITICAL")]
    more_windows = kafka_settings.replace(stats_windows_s=kafka_settings.stats_windows_s + ",300")
    with pytest.raises(SystemExit) as stop:
        check_topics(more_windows)
    assert stop.value.code == EXIT_TOPICS_NOT_READY
    (critical,) = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert f"topic {more_windows.app_id}-line-stats-300s-changelog does not exist" in critical
    assert "defectstream topics create" in critical


@pytest.mark.integration
def test_a_worker_that_cannot_reach_the_cluster_starts_as_before(kafka_settings, caplog, monkeypatch):
    from streams.worker import app

    monkeypatch.setattr(app, "TOPIC_CHECK_TIMEOUT_S", 1.0)
    check_topics(kafka_settings.replace(kafka_bootstrap_servers="127.0.0.1:1"))
    assert any("could not check the topics" in r.getMessage() for r in caplog.records)
