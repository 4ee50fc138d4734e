import asyncio
import gc
import threading
import time
import weakref

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


class ThreadRecordingEngine(FixedEngine):
    """Records the thread and batch size of every predict() call, and whether it was a warm-up's (all-zero input);
    live calls take ``live_s`` and their (start, end) times are kept in ``live_spans``."""

    def __init__(self, concurrent_batches: int = 2, live_s: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.concurrent_batches = concurrent_batches
        self.live_s = live_s
        self.calls: list[tuple[threading.Thread, int, bool]] = []
        self.live_spans: list[tuple[float, float]] = []

    def predict(self, batch):
        warm_up = not batch.any()
        self.calls.append((threading.current_thread(), len(batch), warm_up))
        if not warm_up:
            start = time.monotonic()
            threading.Event().wait(self.live_s)
            self.live_spans.append((start, time.monotonic()))
        return super().predict(batch)

    def live_threads(self) -> set[threading.Thread]:
        return {thread for thread, _, warm_up in self.calls if not warm_up}

    def sizes_warmed_before_first_live_call(self, thread: threading.Thread) -> set[int]:
        sizes = set()
        for t, size, warm_up in self.calls:
            if t is thread:
                if not warm_up:
                    break
                sizes.add(size)
        return sizes


def batch_of(n: int, name: str) -> list:
    return [incoming_frame(f"{name}-{i}", flat_jpeg(220), offset=i) for i in range(n)]


def test_a_reloaded_model_serves_on_threads_of_its_own_that_met_every_batch_size_before_its_first_frame():
    old = ThreadRecordingEngine(concurrent_batches=2, version="old")
    stages = InspectionStages(make_inspector(old))
    stages.warm_up(3)
    new = ThreadRecordingEngine(concurrent_batches=1, version="new")

    async def reload_between_batches():
        before, _ = await stages.run(batch_of(2, "before"))
        stages.swap(stages.prepare(new, 3))  # prepare() blocks: the worker runs it in a thread of its own
        assert stages.threads["infer"] == 1 and stages.batches_to_keep_busy == 6
        after = [o for size in (1, 2, 3) for o in (await stages.run(batch_of(size, f"after{size}")))[0]]
        return before, after

    before, after = asyncio.run(reload_between_batches())
    stages.shutdown()
    assert {o.record.model_version for o in before if o.role == topics.RESULTS} == {"old"}
    assert {o.record.model_version for o in after if o.role == topics.RESULTS} == {"new"}
    new_threads = new.live_threads()
    assert len(new_threads) == 1 and not new_threads & {thread for thread, _, _ in old.calls}
    assert new.sizes_warmed_before_first_live_call(next(iter(new_threads))) == {1, 2, 3}


def test_a_batch_taken_before_a_reload_is_inferred_first_by_its_own_model_on_that_model_s_threads_which_then_stop():
    old = ThreadRecordingEngine(concurrent_batches=1, live_s=0.3, version="old")
    new = ThreadRecordingEngine(concurrent_batches=1, version="new")
    stages = InspectionStages(make_inspector(old))
    stages.warm_up(2)
    release = threading.Event()
    stages._pools["decode"].submit(release.wait)  # the decode thread is busy: the batch waits for it
    prepared = stages.prepare(new, 2)

    async def taken_then_reloaded():
        before = asyncio.ensure_future(stages.run(batch_of(1, "before")))
        await asyncio.sleep(0.05)  # taken (and its model chosen), not decoded yet
        stages.swap(prepared)
        after = asyncio.ensure_future(stages.run(batch_of(1, "after")))
        release.set()
        return await before, await after

    (first, _), (second, _) = asyncio.run(taken_then_reloaded())
    versions = [o.record.model_version for o in first + second if o.role == topics.RESULTS]
    assert versions == ["old", "new"]
    old_threads = {thread for thread, _, _ in old.calls}
    assert old.live_threads() == old_threads  # the old batch ran on the old model's warmed thread
    # The new model's first batch, decoded while the old one was still inferring, waited for it: never both at once.
    ((_, old_done),), ((new_started, _),) = old.live_spans, new.live_spans
    assert new_started >= old_done
    for thread in old_threads:  # and once it was inferred, that thread was let go
        thread.join(timeout=5)
        assert not thread.is_alive()
    stages.shutdown()


def test_after_two_reloads_in_a_row_the_newest_model_still_waits_for_the_oldest_one_s_batch():
    old = ThreadRecordingEngine(concurrent_batches=1, live_s=0.5, version="old")
    new = ThreadRecordingEngine(concurrent_batches=1, version="new")
    stages = InspectionStages(make_inspector(old))
    first, second = stages.prepare(FixedEngine(version="mid"), 1), stages.prepare(new, 1)
    decided: list[str] = []

    async def run(name):
        outgoing, _ = await stages.run(batch_of(1, name))
        decided.extend(o.record.model_version for o in outgoing if o.role == topics.RESULTS)

    async def two_reloads_while_the_old_model_infers():
        taken_before = asyncio.ensure_future(run("before"))
        await asyncio.sleep(0.1)  # the old model is inferring it (0.5 s)
        stages.swap(first)
        stages.swap(second)  # no batch for the model in between
        await asyncio.gather(taken_before, run("after"))

    asyncio.run(two_reloads_while_the_old_model_infers())
    stages.shutdown()
    ((_, old_done),), ((new_started, _),) = old.live_spans, new.live_spans
    assert new_started >= old_done
    assert decided == ["old", "new"]


def test_a_batch_cancelled_while_its_old_model_infers_still_holds_back_the_new_model_until_the_thread_is_done():
    class HeldEngine(ThreadRecordingEngine):
        """Live calls start, then wait until the test lets them go."""

        def __init__(self, **kwargs):
            super().__init__(concurrent_batches=1, **kwargs)
            self.entered, self.go = threading.Event(), threading.Event()

        def predict(self, batch):
            if batch.any():
                self.entered.set()
                assert self.go.wait(timeout=10)
            return super().predict(batch)

    old = HeldEngine(version="old")
    new = ThreadRecordingEngine(concurrent_batches=1, version="new")
    stages = InspectionStages(make_inspector(old))
    prepared = stages.prepare(new, 1)

    async def cancelled_mid_inference():
        taken_before = asyncio.ensure_future(stages.run(batch_of(1, "before")))
        while not old.entered.is_set():
            await asyncio.sleep(0.01)
        stages.swap(prepared)
        taken_before.cancel()  # its coroutine ends; its inference thread goes on
        with pytest.raises(asyncio.CancelledError):
            await taken_before
        after = asyncio.ensure_future(stages.run(batch_of(1, "after")))
        await asyncio.sleep(0.3)
        started_beside_the_old_call = bool(new.live_spans)
        old.go.set()
        outgoing, _ = await after
        return started_beside_the_old_call, outgoing

    started_beside_the_old_call, outgoing = asyncio.run(cancelled_mid_inference())
    stages.shutdown()
    assert not started_beside_the_old_call
    assert [o.record.model_version for o in outgoing if o.role == topics.RESULTS] == ["new"]


def test_a_swapped_out_engine_is_let_go_once_its_batches_are_done_without_waiting_for_the_next_batch():
    stages = InspectionStages(make_inspector(ThreadRecordingEngine(concurrent_batches=1, live_s=0.2)))
    old_engine = weakref.ref(stages.inspector.serving.engine)
    prepared = stages.prepare(FixedEngine(version="new"), 2)

    async def swap_while_a_batch_infers():
        taken_before = asyncio.ensure_future(stages.run(batch_of(1, "before")))
        await asyncio.sleep(0.05)
        stages.swap(prepared)
        await taken_before  # and no batch after it

    asyncio.run(swap_while_a_batch_infers())
    gc.collect()
    assert old_engine() is None  # on a GPU it holds device memory
    stages.shutdown()


def test_a_model_whose_classes_the_thresholds_do_not_fit_is_refused_before_its_warm_up():
    stages = InspectionStages(make_inspector(FixedEngine(version="old")))
    misfit = ThreadRecordingEngine(concurrent_batches=1, version="misfit", class_names=("good", "scratch"))
    with pytest.raises(ValueError):
        stages.prepare(misfit, 3)
    assert misfit.calls == []
    outgoing, _ = asyncio.run(stages.run(batch_of(1, "p")))
    stages.shutdown()
    assert [o.record.model_version for o in outgoing if o.role == topics.RESULTS] == ["old"]


def test_a_model_swapped_on_the_inspector_directly_still_serves_on_threads_sized_for_it(caplog):
    inspector = make_inspector(TwoAtOnceEngine())
    stages = InspectionStages(inspector)
    assert stages.threads["infer"] == 2
    inspector.swap_engine(FixedEngine(version="one-at-a-time"))
    outgoing, _ = asyncio.run(stages.run([incoming_frame("p1", flat_jpeg(220))]))
    stages.shutdown()
    assert [o.record.model_version for o in outgoing if o.role == topics.RESULTS] == ["one-at-a-time"]
    assert stages.threads["infer"] == 1
    assert "without InspectionStages.swap" in caplog.text


def test_the_warm_up_runs_every_batch_size_on_each_inference_thread():
    engine = ThreadRecordingEngine(concurrent_batches=2)
    stages = InspectionStages(make_inspector(engine))
    first_ms = stages.warm_up(3)
    threads = {thread for thread, _, _ in engine.calls}
    stages.shutdown()
    assert sorted(first_ms) == [1, 2, 3]
    assert len(threads) == 2 and all(thread.name.startswith("infer") for thread in threads)
    for thread in threads:  # each thread: every size, once per batch the engine infers at once
        assert sorted(size for t, size, _ in engine.calls if t is thread) == [1, 1, 2, 2, 3, 3]


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
