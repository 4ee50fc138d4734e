import gc
import logging

from streams.worker import gc_pauses
from streams.worker.gc_pauses import GCPauseWatch, freeze_startup_objects


def test_freeze_takes_the_objects_alive_now_out_of_collection():
    marker = [object()]  # a container: tracked by the collector
    try:
        frozen = freeze_startup_objects()
        # Only gc.freeze adds to the count; frozen objects freed since (by other threads of the test process) leave.
        assert 0 < gc.get_freeze_count() <= frozen
        assert not any(o is marker for o in gc.get_objects())
        created_later = [object()]
        assert any(o is created_later for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(o is marker for o in gc.get_objects())


def test_watch_reports_every_collection_by_generation_until_removed():
    seen: list[tuple[int, float]] = []
    gc.disable()  # only the collections below, none triggered by allocations meanwhile
    watch = GCPauseWatch(lambda generation, seconds: seen.append((generation, seconds))).install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        watch.remove()
        gc.enable()
    assert [g for g, _ in seen] == [0, 2]
    assert all(s >= 0 for _, s in seen)
    gc.collect()
    assert len(seen) == 2


def test_watch_keeps_long_pauses_and_logs_them_outside_the_collector(monkeypatch, caplog):
    clock = iter([10.0, 10.0 + gc_pauses.LOG_PAUSE_S + 0.2, 20.0, 20.001])
    monkeypatch.setattr(gc_pauses.time, "perf_counter", lambda: next(clock))
    seen: list[tuple[int, float]] = []
    watch = GCPauseWatch(lambda generation, seconds: seen.append((generation, seconds)))
    with caplog.at_level(logging.WARNING, logger=gc_pauses.__name__):
        watch("start", {"generation": 2})
        watch("stop", {"generation": 2})
        watch("start", {"generation": 0})
        watch("stop", {"generation": 0})
        assert not caplog.records  # nothing is logged from inside the collector
        assert watch.log_long_pauses() == 1
        assert watch.log_long_pauses() == 0
    assert [g for g, _ in seen] == [2, 0]
    assert seen[0][1] > gc_pauses.LOG_PAUSE_S
    assert len(caplog.records) == 1 and "generation 2" in caplog.messages[0] and "250 ms" in caplog.messages[0]
