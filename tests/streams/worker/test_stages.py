import asyncio
import threading

import pytest

from streams.kafka import topics
from streams.settings import Settings
from streams.worker.stages import InspectionStages
from tests.streams.frames import FixedEngine, flat_jpeg, incoming_frame, make_inspector


class TwoAtOnceEngine(FixedEngine):
    """Records how many predict() calls overlap; each waits a little so that overlapping batches do overlap."""

    def __init__(self):
        super().__init__()
        self.concurrent_batches = 2
        self._lock = threading.Lock()
        self.running = self.most_at_once = 0

    def predict(self, batch):
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        threading.Event().wait(0.05)
        with self._lock:
            self.running -= 1
        return super().predict(batch)


def test_a_batch_goes_through_every_stage_and_comes_back_with_its_own_verdicts():
    stages = InspectionStages(make_inspector())
    frames = [
        incoming_frame("bright", flat_jpeg(220)),
        incoming_frame("dark", flat_jpeg(30), offset=1),
        incoming_frame("empty", b"", offset=2),
    ]
    outgoing, compute_s = asyncio.run(stages.run(frames))
    stages.shutdown()
    results = {o.record.part_id: o.record.decision for o in outgoing if o.role == topics.RESULTS}
    assert results == {"bright": "pass", "dark": "reject"}
    assert [o.record.reason for o in outgoing if o.role == topics.DEAD_LETTERS] == ["empty_payload"]
    assert compute_s > 0
    assert stages.threads == {"decode": 1, "infer": 1, "decide": 1}


def test_the_engine_gets_as_many_batches_at_once_as_it_infers_and_no_more():
    engine = TwoAtOnceEngine()
    stages = InspectionStages(make_inspector(engine), decode_threads=3)
    assert stages.threads == {"decode": 3, "infer": 2, "decide": 1}
    assert stages.batches_to_keep_busy == 12

    async def many():
        batches = [[incoming_frame(f"b{b}-{i}", flat_jpeg(220), offset=i) for i in range(2)] for b in range(6)]
        return await asyncio.gather(*(stages.run(batch) for batch in batches))

    done = asyncio.run(many())
    stages.shutdown()
    assert engine.most_at_once == 2
    for b, (outgoing, _) in enumerate(done):  # every batch gets back the verdicts of its own frames
        assert sorted(o.record.part_id for o in outgoing if o.role == topics.RESULTS) == [f"b{b}-0", f"b{b}-1"]


def test_no_decode_thread_is_refused():
    with pytest.raises(ValueError, match="decode_threads"):
        InspectionStages(make_inspector(), decode_threads=0)


def test_too_few_batches_in_flight_for_the_stage_threads_is_named():
    stages = InspectionStages(make_inspector(TwoAtOnceEngine()), decode_threads=2)
    assert stages.in_flight_warning(10) is None
    assert "max_batches_in_flight=9" in stages.in_flight_warning(9)
    stages.shutdown()
    # The default settings keep a CPU worker's stages busy: one decode thread, two OpenVINO streams, verdicts.
    defaults = Settings()
    engine = TwoAtOnceEngine()
    assert defaults.inference_streams == engine.concurrent_batches
    stages = InspectionStages(make_inspector(engine), decode_threads=defaults.decode_threads)
    assert stages.in_flight_warning(defaults.max_batches_in_flight) is None
    stages.shutdown()


def test_after_a_reload_the_inference_threads_follow_the_new_engine():
    inspector = make_inspector(TwoAtOnceEngine())
    stages = InspectionStages(inspector)
    assert stages.threads["infer"] == 2
    inspector.swap_engine(FixedEngine(version="one-at-a-time"))
    stages.follow_engine()
    assert stages.threads["infer"] == 1 and stages.batches_to_keep_busy == 6
    outgoing, _ = asyncio.run(stages.run([incoming_frame("p1", flat_jpeg(220))]))
    stages.shutdown()
    assert [o.record.model_version for o in outgoing if o.role == topics.RESULTS] == ["one-at-a-time"]


def test_a_batch_keeps_the_model_serving_when_it_was_taken_even_if_decoded_after_a_reload():
    inspector = make_inspector(FixedEngine(version="old"))
    stages = InspectionStages(inspector)
    release = threading.Event()
    stages._pools["decode"].submit(release.wait)  # the decode thread is busy: the batch waits for it

    async def taken_then_reloaded():
        before = asyncio.ensure_future(stages.run([incoming_frame("before", flat_jpeg(220))]))
        await asyncio.sleep(0.05)  # taken (and its model chosen), not decoded yet
        inspector.swap_engine(FixedEngine(version="new"))
        after = asyncio.ensure_future(stages.run([incoming_frame("after", flat_jpeg(220))]))
        release.set()
        return await before, await after

    (first, _), (second, _) = asyncio.run(taken_then_reloaded())
    stages.shutdown()
    versions = [o.record.model_version for o in first + second if o.role == topics.RESULTS]
    assert versions == ["old", "new"]


def test_the_warm_up_runs_every_batch_size_on_each_inference_thread():
    class ThreadRecordingEngine(TwoAtOnceEngine):
        def __init__(self):
            super().__init__()
            self.calls: list[tuple[str, int]] = []

        def predict(self, batch):
            self.calls.append((threading.current_thread().name, len(batch)))
            return super().predict(batch)

    engine = ThreadRecordingEngine()
    stages = InspectionStages(make_inspector(engine))
    first_ms = stages.warm_up(3)
    threads = {name for name, _ in engine.calls}
    stages.shutdown()
    assert sorted(first_ms) == [1, 2, 3]
    assert len(threads) == 2 and all(name.startswith("infer") for name in threads)
    for name in threads:  # each thread: every size, once per batch the engine infers at once
        assert sorted(size for t, size in engine.calls if t == name) == [1, 1, 2, 2, 3, 3]


def test_only_a_stage_call_a_thread_is_working_on_counts_as_running_and_for_how_long():
    class OneCallAtATimeEngine(FixedEngine):
        """Each predict() call waits until the test lets it go; ``entered`` counts the calls that have started."""

        def __init__(self):
            super().__init__()
            self.go = threading.Semaphore(0)
            self.entered = 0

        def predict(self, batch):
            self.entered += 1
            assert self.go.acquire(timeout=10)
            return super().predict(batch)

    engine = OneCallAtATimeEngine()
    stages = InspectionStages(make_inspector(engine))
    now = [100.0]
    stages._clock = lambda: now[0]
    assert stages.longest_running() is None

    async def until(condition):
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def two_batches():
        first = asyncio.ensure_future(stages.run([incoming_frame("a", flat_jpeg(220))]))
        second = asyncio.ensure_future(stages.run([incoming_frame("b", flat_jpeg(220), offset=1)]))
        await until(lambda: engine.entered == 1)
        await asyncio.sleep(0.1)  # the second batch is decoded by now, queued for the one inference thread
        now[0] = 112.5
        stuck = stages.longest_running()
        engine.go.release()  # the first call returns; the second starts now, at 112.5
        await until(lambda: engine.entered == 2)
        now[0] = 113.0
        second_call = stages.longest_running()
        engine.go.release()
        await first, await second
        return stuck, second_call

    stuck, second_call = asyncio.run(two_batches())
    assert stuck == ("infer", 12.5)
    assert second_call == ("infer", 0.5)  # counted from when its call started, not from when it was queued (100)
    assert stages.longest_running() is None  # every call finished
    stages.shutdown()
