import pytest

from schemas.records import DeadLetter, InspectionResult
from streams.worker import stats
from tests.schemas.test_records import EXAMPLES
from tests.schemas.test_records import _result as result_record


def _result(decision: str = "pass", label: str = "ok", late: bool = False, total_ms: float = 40.0) -> InspectionResult:
    timings = {"queue_wait": 1.0, "decode": 1.0, "inference": 2.0, "total_since_capture": total_ms}
    return result_record(decision=decision, label=label, late=late, timings_ms=timings)


def _dead_letter() -> DeadLetter:
    return EXAMPLES["dead_letter"]


def _add(window, records):
    for record in records:
        add = stats.add_dead_letter if isinstance(record, DeadLetter) else stats.add_result
        window = add(window, record)
    return window


def test_results_and_dead_letters_are_counted_by_decision_class_and_lateness():
    window = _add(
        stats.empty(),
        [_result(), _result("reject", "scratch", late=True, total_ms=120.0), _dead_letter(), _result("review", "dent")],
    )
    assert window["frames"] == 4
    assert window["unreadable"] == 1
    assert window["late"] == 1
    assert window["by_decision"] == {"pass": 1, "reject": 1, "review": 1}
    assert window["by_class"] == {"ok": 1, "scratch": 1, "dent": 1}
    assert sum(window["latency_buckets"].values()) == 3  # dead letters have no latency


def test_adding_never_changes_the_value_it_was_given():
    # Faust keeps the stored value; a write must go through table[key] = new value (and its changelog).
    before = _add(stats.empty(), [_result()])
    snapshot = {k: dict(v) if isinstance(v, dict) else v for k, v in before.items()}
    stats.add_result(before, _result("reject", "scratch"))
    stats.add_dead_letter(before, _dead_letter())
    assert before == snapshot


def test_window_record_has_rate_and_latency_percentiles():
    window = _add(
        stats.empty(), [_result(total_ms=10.0)] * 18 + [_result("reject", "scratch", total_ms=100.0), _dead_letter()]
    )
    record = stats.to_record("line-1", 10.0, 1_000.0, window)
    assert record.frames == 20
    assert record.defect_rate == pytest.approx(2 / 20)  # the reject and the unreadable frame
    assert record.window_start_ts_ns == 1_000_000_000_000
    assert record.window_end_ts_ns == 1_010_000_000_000
    # Buckets are 5% wide and report their upper edge.
    assert 10.0 <= record.latency_p50_ms <= 10.5
    assert 100.0 <= record.latency_p95_ms <= 105.0  # rank 0.95 x 19 latencies falls on the 19th
    assert stats.to_record("line-1", 10.0, 0.0, stats.empty()).defect_rate is None


@pytest.mark.parametrize("spec", ["", "0,10", "ten"])
def test_bad_window_specs_are_refused(spec):
    with pytest.raises(ValueError, match="stats windows"):
        stats.parse_windows(spec)


def test_window_specs_are_sorted_and_deduplicated():
    assert stats.parse_windows("60, 10,10") == [10.0, 60.0]


def test_a_batch_counted_apart_and_merged_equals_adding_record_by_record():
    # The line-stats agent counts a batch on its own and writes table + counts once; the window must come out as if
    # every record had been added to it one by one.
    stored = _add(stats.empty(), [_result(), _result("reject", "scratch", total_ms=90.0)])
    batch = [_result("review", "dent", late=True), _dead_letter(), _result(total_ms=12.0), _result("reject", "scratch")]
    counts = stats.empty()
    for record in batch:
        stats.count(counts, record)
    snapshot = {k: dict(v) if isinstance(v, dict) else v for k, v in stored.items()}
    assert stats.merge(stored, counts) == _add(stored, batch)
    assert stored == snapshot  # the table's value is never changed in place
    assert stats.merge(stats.empty(), stats.empty()) == stats.empty()
