import pytest

from schemas.records import DeadLetter, InspectionResult, LineCounts, SchemaError
from streams.worker import stats
from tests.schemas.examples import EXAMPLES, result_record


def _result(decision: str = "pass", label: str = "ok", late: bool = False, total_ms: float = 40.0) -> InspectionResult:
    timings = {"queue_wait": 1.0, "decode": 1.0, "inference": 2.0, "total_since_capture": total_ms}
    return result_record(decision=decision, label=label, late=late, timings_ms=timings)


def _dead_letter() -> DeadLetter:
    return EXAMPLES["dead_letter"]


def _counts(records):
    window = stats.empty()
    for record in records:
        stats.count(window, record)
    return window


def test_results_and_dead_letters_are_counted_by_decision_class_and_lateness():
    window = _counts(
        [_result(), _result("reject", "scratch", late=True, total_ms=120.0), _dead_letter(), _result("review", "dent")]
    )
    assert window["frames"] == 4
    assert window["unreadable"] == 1
    assert window["late"] == 1
    assert window["by_decision"] == {"pass": 1, "reject": 1, "review": 1}
    assert window["by_class"] == {"ok": 1, "scratch": 1, "dent": 1}
    assert sum(window["latency_buckets"].values()) == 3  # dead letters have no latency


def test_merging_never_changes_the_value_it_was_given():
    # Faust keeps the stored value; a write must go through table[key] = new value (and its changelog).
    before = _counts([_result()])
    snapshot = {k: dict(v) if isinstance(v, dict) else v for k, v in before.items()}
    merged = stats.merge(before, _counts([_result("reject", "scratch"), _dead_letter()]))
    assert before == snapshot
    assert merged["frames"] == 3 and merged["by_decision"] == {"pass": 1, "reject": 1} and merged["unreadable"] == 1


def test_window_record_has_rate_and_latency_percentiles():
    window = _counts([_result(total_ms=10.0)] * 18 + [_result("reject", "scratch", total_ms=100.0), _dead_letter()])
    record = stats.to_record("line-1", 10.0, 1_000.0, window)
    assert record.frames == 20
    assert record.defect_rate == pytest.approx(2 / 20)  # the reject and the unreadable frame
    assert record.window_start_ts_ns == 1_000_000_000_000
    assert record.window_end_ts_ns == 1_010_000_000_000
    # Buckets are 5% wide and report their upper edge.
    assert 10.0 <= record.latency_p50_ms <= 10.5
    assert 100.0 <= record.latency_p95_ms <= 105.0  # rank 0.95 x 19 latencies falls on the 19th
    assert stats.to_record("line-1", 10.0, 0.0, stats.empty()).defect_rate is None


@pytest.mark.parametrize("spec", ["", "0,10", "ten", "0.5", "10,2.5"])
def test_bad_window_specs_are_refused(spec):
    with pytest.raises(ValueError, match="stats windows"):
        stats.parse_windows(spec)


def test_window_specs_are_sorted_and_deduplicated():
    assert stats.parse_windows("60, 10,10") == [10.0, 60.0]


def test_a_batch_counted_apart_and_merged_equals_adding_record_by_record():
    # The line-stats agent counts a batch on its own and writes table + counts once; the window must come out as if
    # every record had been written to it one by one, and as if all had been counted together.
    earlier = [_result(), _result("reject", "scratch", total_ms=90.0)]
    batch = [_result("review", "dent", late=True), _dead_letter(), _result(total_ms=12.0), _result("reject", "scratch")]
    stored = _counts(earlier)
    one_by_one = stored
    for record in batch:
        one_by_one = stats.merge(one_by_one, _counts([record]))
    assert stats.merge(stored, _counts(batch)) == one_by_one == _counts(earlier + batch)
    assert stats.merge(stats.empty(), stats.empty()) == stats.empty()


def test_line_counts_split_a_batch_by_line_and_add_up_to_counting_it_whole():
    line_a = [_result(), _result("reject", "scratch", late=True, total_ms=120.0), _dead_letter()]
    line_b = [_result("review", "dent", total_ms=8.0), _dead_letter()]
    batch = [("a", r) for r in line_a[:2]] + [("b", line_b[0]), ("a", line_a[2]), ("b", line_b[1])]
    counted = {c.line_id: c for c in stats.line_counts(batch)}
    assert sorted(counted) == ["a", "b"]
    assert stats.counts_of(counted["a"]) == _counts(line_a)
    assert stats.counts_of(counted["b"]) == _counts(line_b)
    # What the line-stats agent does with them: merged, they are the batch counted in one go.
    merged = stats.merge(stats.counts_of(counted["a"]), stats.counts_of(counted["b"]))
    assert merged == _counts(line_a + line_b)
    assert stats.line_counts([]) == []


def test_line_counts_survive_their_wire_format():
    (counted,) = stats.line_counts(
        [("line-1", _result("reject", "scratch", total_ms=33.0)), ("line-1", _dead_letter())]
    )
    again = LineCounts.from_json(counted.to_json())
    assert again == counted
    assert stats.counts_of(again)["frames"] == 2 and stats.counts_of(again)["unreadable"] == 1


def test_line_counts_with_a_bucket_that_is_not_an_index_are_refused():
    data = {**stats.line_counts([("l", _result())])[0].to_dict(), "latency_buckets": {"ten": 1}}
    with pytest.raises(SchemaError, match="ten"):
        LineCounts.from_dict(data)
