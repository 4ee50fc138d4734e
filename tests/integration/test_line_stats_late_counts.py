"""Line counts that reach a running worker's line-stats agent late, on the real broker.

Counts 95 s late are still added to their closed window, which is published again whole; counts later than the
window's stay in its table are left out of it (logged, counted in /metrics) instead of publishing a window that holds
them alone, which readers, who keep a window's latest record, would take for the whole window. A successor worker
publishes again only the restored windows still in their stay.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from schemas.records import LineCounts, LineStats
from streams.kafka import topics
from streams.kafka.broker import free_port
from streams.kafka.config import producer_config
from streams.kafka.reader import TopicReader
from streams.kafka.topics import create_topics
from streams.worker.process import WorkerProcess
from tests.integration.test_pipeline import _latest_windows, _metrics

pytestmark = pytest.mark.integration

LINE = "line-late"
WINDOW_S = 2.0


def _counts(frames: int) -> LineCounts:
    return LineCounts(
        line_id=LINE,
        frames=frames,
        by_decision={"pass": frames},
        by_class={"ok": frames},
        latency_buckets={"50": frames},
    )


def test_late_counts_join_their_window_too_late_ones_are_left_out_and_restored_ones_expire(
    kafka_settings, skeleton_model, tmp_path
):
    settings = kafka_settings.replace(
        model_path=skeleton_model,
        web_port=free_port(),
        stats_windows_s=f"{WINDOW_S:g}",
        stats_grace_s=3.0,  # tables cleaned every 3 s, published every 1 s: a recreated window would be published
        model_reload_interval_s=0,
    )
    create_topics(settings)  # the changelog of the 2 s stats table
    producer = Producer(producer_config(settings))
    topic = settings.topic(topics.LINE_COUNTS)

    def send(counts: LineCounts, ts_s: float) -> None:
        producer.produce(topic, counts.to_json(), key=LINE.encode(), timestamp=round(ts_s * 1000))
        assert producer.flush(30) == 0

    def window_start_ns(ts_s: float) -> int:
        return round((ts_s // WINDOW_S) * WINDOW_S * 1e9)

    reader = TopicReader(settings, settings.topic(topics.LINE_STATS))

    def windows(records) -> dict:
        return {
            start: w.frames
            for (_, start), w in _latest_windows([LineStats.from_json(r.value) for r in records], WINDOW_S).items()
        }

    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready()
        now = time.time()
        a_while_ago = now - 95  # inside the 110 s after its end that a closed window takes counts
        long_ago = now - 300  # past it: Faust may already have dropped that window
        send(_counts(4), a_while_ago)
        seen = reader.read_until(lambda r: windows(r).get(window_start_ns(a_while_ago)) == 4, timeout_s=60)
        assert windows(seen).get(window_start_ns(a_while_ago)) == 4, windows(seen)

        send(_counts(2), a_while_ago)  # later counts for the same, already published, window
        send(_counts(5), long_ago)
        recently = time.time()
        send(_counts(3), recently)
        seen += reader.read_until(
            lambda r: windows(seen + r).get(window_start_ns(a_while_ago)) == 6 and 3 in windows(seen + r).values(),
            timeout_s=60,
            settle_s=3.0,  # a window for the long-ago counts would be published within 1 s of their write
        )
        reader.close()
        published = windows(seen)
        assert published[window_start_ns(a_while_ago)] == 6, published
        assert window_start_ns(long_ago) not in published, published
        assert sorted(published.values()) == [3, 6], published

        left_out = _metrics(worker.url)["defectstream_line_stats_late_frames_total"]
        assert left_out == {(("line", LINE), ("window", "2s")): 5.0}, left_out
        # Two more left out just before the stop: at least one is held back for the next 5-s summary, which the
        # stopping worker writes.
        send(_counts(7), long_ago)
        send(_counts(8), long_ago)
        deadline = time.monotonic() + 30
        while _metrics(worker.url)["defectstream_line_stats_late_frames_total"] != {
            (("line", LINE), ("window", "2s")): 20.0
        }:
            assert time.monotonic() < deadline, _metrics(worker.url)["defectstream_line_stats_late_frames_total"]
            time.sleep(0.05)
        assert worker.returncode is None
    log_text = (tmp_path / "worker.log").read_text()
    assert f"5 frames of line {LINE} left out of the 2s stats window" in log_text, log_text[-3000:]
    assert "more line counts too late for their stats window in the last" in log_text, log_text[-3000:]
    assert f"8 frames of line {LINE} left out of the 2s stats window" in log_text, log_text[-3000:]

    # A worker that takes the tables over restores both windows from the changelog. Faust never expires restored
    # windows: the one still inside its 120 s is published again (readers keep the latest, identical record), the
    # one past it is not, and is dropped from memory.
    past_stay_at = window_start_ns(a_while_ago) / 1e9 + WINDOW_S + 120 + 5
    time.sleep(max(0.0, past_stay_at - time.time()))
    reader = TopicReader(settings, settings.topic(topics.LINE_STATS), from_end=True)
    with WorkerProcess(settings, tmp_path / "worker-2.log") as successor:
        successor.wait_ready()
        assert time.time() < window_start_ns(recently) / 1e9 + WINDOW_S + 110, "the recent window aged out: too slow"
        again = reader.read_until(lambda r: 3 in windows(r).values(), timeout_s=60, settle_s=3.0)
        reader.close()
        assert windows(again) == {window_start_ns(recently): 3}, windows(again)
        assert successor.returncode is None
