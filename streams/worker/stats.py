"""Per-line window aggregates for the line-stats topic: pure functions over JSON-able dicts, so the Faust table can
store them (its changelog serializes values as JSON) and tests can check them without Kafka.

Latency percentiles come from log-spaced buckets (5% wide): mergeable, a few dozen integers per window instead of
every sample. Mergeable counts are what lets the inspection agent send one :class:`LineCounts` per line and batch
(:func:`line_counts`) instead of the line-stats agent reading every result back, and what lets the line-stats agent
write its tables once per batch of those (:func:`merge`) rather than once per frame: every table write is a
changelog record in Kafka.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from schemas.records import DeadLetter, InspectionResult, LineCounts, LineStats

_BUCKET_RATIO = 1.05
_MIN_MS = 0.1


def parse_windows(spec: str) -> list[float]:
    """``"10,60"`` -> [10.0, 60.0] (seconds)."""
    try:
        windows = sorted({float(w) for w in spec.split(",") if w.strip()})
    except ValueError:
        raise ValueError(f"stats windows {spec!r}: expected seconds, e.g. '10,60'") from None
    if not windows or windows[0] <= 0:
        raise ValueError(f"stats windows {spec!r}: need at least one positive window")
    if any(w != int(w) for w in windows):
        # Faust's windows step through int(size): a 0.5-s window would fail on its first count, a 2.5-s one would
        # be counted in 2-s steps.
        raise ValueError(f"stats windows {spec!r}: whole seconds only")
    return windows


def table_name(window_s: float) -> str:
    """Faust table name; its changelog topic is ``<app id>-<table name>-changelog``."""
    return f"line-stats-{window_s:g}s"


def empty() -> dict[str, Any]:
    return {"frames": 0, "by_decision": {}, "by_class": {}, "unreadable": 0, "late": 0, "latency_buckets": {}}


def _bucket(ms: float) -> str:
    return str(0 if ms <= _MIN_MS else int(math.log(ms / _MIN_MS, _BUCKET_RATIO)) + 1)


def _bucket_upper_ms(index: int) -> float:
    return _MIN_MS * _BUCKET_RATIO**index


def count(window: dict[str, Any], record: InspectionResult | DeadLetter) -> None:
    """Count ``record`` into ``window`` in place: for a batch's own counts, never for a value a table holds."""
    window["frames"] += 1
    if isinstance(record, DeadLetter):
        window["unreadable"] += 1
        return
    _increment(window["by_decision"], record.decision, 1)
    _increment(window["by_class"], record.label, 1)
    window["late"] += int(record.late)
    _increment(window["latency_buckets"], _bucket(record.timings_ms["total_since_capture"]), 1)


def line_counts(records: Iterable[tuple[str, InspectionResult | DeadLetter]]) -> list[LineCounts]:
    """A batch's ``(line id, result or dead letter)`` pairs counted per line: one record per line in the batch."""
    by_line: dict[str, dict[str, Any]] = {}
    for line_id, record in records:
        count(by_line.setdefault(line_id, empty()), record)
    return [LineCounts(line_id=line_id, **counts) for line_id, counts in by_line.items()]


def counts_of(record: LineCounts) -> dict[str, Any]:
    """The counts a :class:`LineCounts` carries, as :func:`merge` takes them."""
    return {key: getattr(record, key) for key in empty()}


def merge(window: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    """A new window holding both: what a table has for a line and window, plus a batch's counts for it."""
    merged = _copy(window)
    for key in ("frames", "unreadable", "late"):
        merged[key] += counts[key]
    for key in ("by_decision", "by_class", "latency_buckets"):
        for name, n in counts[key].items():
            _increment(merged[key], name, n)
    return merged


def _increment(counter: dict[str, int], name: str, n: int) -> None:
    counter[name] = counter.get(name, 0) + n


def percentile_ms(buckets: dict[str, int], q: float) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for index in sorted(int(b) for b in buckets):
        seen += buckets[str(index)]
        if seen >= rank:
            return round(_bucket_upper_ms(index), 3)
    return None  # unreachable: seen reaches total


def to_record(line_id: str, window_s: float, start_s: float, window: dict[str, Any]) -> LineStats:
    decisions = window["by_decision"]
    frames = window["frames"]
    flagged = decisions.get("reject", 0) + decisions.get("review", 0) + window["unreadable"]
    return LineStats(
        line_id=line_id,
        window_s=float(window_s),
        window_start_ts_ns=round(start_s * 1e9),
        window_end_ts_ns=round((start_s + window_s) * 1e9),
        frames=frames,
        by_decision=dict(decisions),
        by_class=dict(window["by_class"]),
        unreadable=window["unreadable"],
        late=window["late"],
        defect_rate=round(flagged / frames, 6) if frames else None,
        latency_p50_ms=percentile_ms(window["latency_buckets"], 0.50),
        latency_p95_ms=percentile_ms(window["latency_buckets"], 0.95),
    )


def _copy(window: dict[str, Any]) -> dict[str, Any]:
    base = empty()
    base.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in (window or {}).items()})
    return base
