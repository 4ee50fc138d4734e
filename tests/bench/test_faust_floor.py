import pytest

from bench import faust_floor
from bench.faust_floor import get_args_parser, per_frame_ms


def test_cpu_is_split_into_event_loop_consumer_thread_and_native():
    before = {1: 1.0, 2: 0.5, 3: 0.0}
    after = {1: 1.4, 2: 0.7, 3: 0.1, 4: 0.2}  # thread 4 started meanwhile
    names = {1: "MainThread", 2: "Thread-1", 4: "Thread-2"}
    ms = per_frame_ms(before, after, names, frames=100)
    assert ms == pytest.approx({"event loop": 4.0, "consumer thread": 4.0, "native": 1.0})


def test_too_few_frames_for_one_batch_are_refused():
    with pytest.raises(ValueError, match="--frames"):
        faust_floor.main(get_args_parser().parse_args(["--frames", "4", "--max-batch", "8"]))


def test_every_frame_is_taken_and_costs_some_cpu(kafka, monkeypatch, tmp_path):
    # The real thing on the session's broker: a Faust child with the worker's consumer settings reads the frames.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap)
    args = get_args_parser().parse_args(["--frames", "200", "--repeats", "1", "--out", str(tmp_path)])
    result = faust_floor.main(args)
    (row,) = result["rows"]
    assert row["frames"] >= 200 and row["frames_per_s"] > 0
    # /proc counts in clock ticks (10 ms): with 200 frames only the event loop is sure to have been charged one.
    assert row["cpu_ms_per_frame"]["event loop"] > 0
    assert list(tmp_path.glob("faust_floor-*.json"))
