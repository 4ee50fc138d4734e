import threading

from bench.stream_contention import print_table, throughput
from models.engines.openvino_engine import OpenVINOEngine
from models.skeleton import ensure_skeleton_artifact


class CountingCalls:
    """Wraps the engine's compiled plans and records how many calls ran at once."""

    def __init__(self, inner):
        self.inner, self.lock, self.now, self.most = inner, threading.Lock(), 0, 0

    def __call__(self, batch):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self.inner(batch)
        finally:
            with self.lock:
                self.now -= 1


def test_every_stream_is_kept_busy_and_counted(base_settings):
    engine = OpenVINOEngine(ensure_skeleton_artifact(base_settings.cache_dir), threads=2, verify=False, streams=2)
    engine._infer = counting = CountingCalls(engine._infer)
    row = throughput(engine, batch=2, seconds=0.3)
    assert counting.most == 2  # one caller per stream, both at once
    assert row["frames_per_s"] > 0 and row["batch_p50_ms"] > 0 and row["cpu_ms_per_frame"] > 0


def test_the_table_compares_each_stream_count_with_itself_alone(capsys):
    rows = [
        {"load": 0.0, "streams": 1, "frames_per_s": 400.0, "batch_p50_ms": 20.0, "cpu_ms_per_frame": 5.0},
        {"load": 0.0, "streams": 2, "frames_per_s": 420.0, "batch_p50_ms": 38.0, "cpu_ms_per_frame": 4.8},
        {"load": 0.5, "streams": 1, "frames_per_s": 240.0, "batch_p50_ms": 33.0, "cpu_ms_per_frame": 5.4},
        {"load": 0.5, "streams": 2, "frames_per_s": 336.0, "batch_p50_ms": 41.0, "cpu_ms_per_frame": 4.8},
    ]
    print_table({"machine": {"cpu": "cpu", "threads": 2}, "batch": 8, "rows": rows})
    out = capsys.readouterr().out
    assert "| 50% of a core | 1 | 240 | 0.60 |" in out and "| 50% of a core | 2 | 336 | 0.80 |" in out
