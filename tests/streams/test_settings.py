from pathlib import Path

import pytest

from streams.settings import Settings


def test_env_names_follow_one_rule():
    assert Settings.env_name("max_batch") == "DEFECTSTREAM_MAX_BATCH"
    assert Settings.env_name("kafka_bootstrap_servers") == "KAFKA_BOOTSTRAP_SERVERS"


def test_environment_is_read_and_coerced():
    s = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
            "DEFECTSTREAM_MAX_BATCH": "16",
            "DEFECTSTREAM_MAX_WAIT_S": "0.5",
            "DEFECTSTREAM_MODEL_PATH": "/m.pt",
        }
    )
    assert (s.kafka_bootstrap_servers, s.max_batch, s.max_wait_s, s.model_path) == (
        "k:9092",
        16,
        0.5,
        Path("/m.pt"),
    )


def test_overrides_beat_environment_and_none_is_ignored():
    s = Settings.from_env({"DEFECTSTREAM_MAX_BATCH": "16"}, max_batch=4, device=None)
    assert s.max_batch == 4
    assert s.device == "auto"


def test_bad_value_names_the_variable():
    with pytest.raises(ValueError, match="DEFECTSTREAM_MAX_BATCH"):
        Settings.from_env({"DEFECTSTREAM_MAX_BATCH": "many"})


def test_unknown_override_is_refused():
    with pytest.raises(TypeError, match="unknown setting"):
        Settings.from_env({}, max_batchh=3)


def test_to_env_round_trips():
    s = Settings.from_env({}, kafka_bootstrap_servers="a:1", max_batch=3, model_path=Path("/x.pt"), max_wait_s=0.1)
    assert Settings.from_env(s.to_env()) == s
    # A bool switched off survives the trip to a worker's environment ("False").
    off = Settings(retrain_reviews=False, pin_inference_threads=True)
    assert Settings.from_env(off.to_env()).retrain_reviews is False
    assert Settings.from_env({"DEFECTSTREAM_RETRAIN_REVIEWS": "false"}).retrain_reviews is False


def test_topic_names_use_prefix():
    assert Settings.from_env({}, topic_prefix="plant7").topic("frames") == "plant7.frames"
