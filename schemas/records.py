"""Records on the result topics, JSON on the wire, each validated against its schema in ``schemas/json/``.

Every record carries ``kind`` and ``schema_version`` so a reader can refuse what it does not understand:
:meth:`Record.from_json` raises :class:`SchemaError` (and nothing else) for any message that breaks the contract.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from schemas import SCHEMA_VERSION, contracts

R = TypeVar("R", bound="Record")

DECISIONS = ("pass", "reject", "review")


class SchemaError(ValueError):
    pass


@dataclass(frozen=True, kw_only=True)
class Record:
    kind: ClassVar[str] = "record"
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        # Shallow (nested lists and dicts are shared, not copied): dataclasses.asdict's deep copy was most of the
        # cost of encoding a record, and every frame produces at least two.
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls: type[R], raw: bytes | str | None) -> R:
        """Parse and validate against ``schemas/json/<kind>.schema.json``."""
        if raw is None:
            raise SchemaError(f"{cls.kind}: empty message (tombstone)")
        try:
            data = json.loads(raw)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"{cls.kind}: not JSON ({exc})") from None
        except RecursionError:  # ~1000 levels of nesting in a few KB: a reader must skip it, not crash on it
            raise SchemaError(f"{cls.kind}: JSON nested too deeply") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        if isinstance(data, dict) and data.get("kind", cls.kind) != cls.kind:
            raise SchemaError(f"expected a {cls.kind} record, got kind {data.get('kind')!r}")
        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(f"{cls.kind}: unsupported schema_version {data.get('schema_version')!r}")
        problems = contracts.errors(cls.kind, data)
        if problems:
            raise SchemaError(f"{cls.kind}: " + "; ".join(problems))
        return cls(**{k: v for k, v in data.items() if k != "kind"})


@dataclass(frozen=True, kw_only=True)
class InspectionResult(Record):
    kind: ClassVar[str] = "inspection_result"
    part_id: str
    line_id: str
    camera_id: str
    station: str | None = None
    trace_id: str | None = None
    capture_ts_ns: int
    deadline_ts_ns: int
    model_name: str
    model_version: str
    label: str
    confidence: float
    top_k: list[dict[str, Any]]
    decision: str
    late: bool
    timings_ms: dict[str, float]
    batch_size: int
    worker_id: str
    decided_ts_ns: int


@dataclass(frozen=True, kw_only=True)
class RejectCommand(Record):
    kind: ClassVar[str] = "reject_command"
    part_id: str
    line_id: str
    gate_id: str
    action: str  # "reject" | "review"
    reason: str  # "defect" | "low_confidence" | "unreadable_frame"
    label: str | None
    late: bool
    capture_ts_ns: int
    decided_ts_ns: int
    deadline_ts_ns: int
    model_version: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeadLetter(Record):
    kind: ClassVar[str] = "dead_letter"
    reason: str
    detail: str
    headers: dict[str, str]
    payload_bytes: int
    payload_sha256: str
    payload_b64: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    worker_id: str
    received_ts_ns: int

    def payload(self) -> bytes | None:
        return None if self.payload_b64 is None else base64.b64decode(self.payload_b64)


@dataclass(frozen=True, kw_only=True)
class LineStats(Record):
    kind: ClassVar[str] = "line_stats"
    line_id: str
    window_s: float
    window_start_ts_ns: int
    window_end_ts_ns: int
    frames: int
    by_decision: dict[str, int] = field(default_factory=dict)
    by_class: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0
    late: int = 0
    defect_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class LineCounts(Record):
    """Internal: one line's counts in one inspected batch, for the line-stats tables (see its schema)."""

    kind: ClassVar[str] = "line_counts"
    line_id: str
    frames: int
    by_decision: dict[str, int] = field(default_factory=dict)
    by_class: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0
    late: int = 0
    latency_buckets: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RetrainingSample(Record):
    kind: ClassVar[str] = "retraining_sample"
    part_id: str
    line_id: str
    camera_id: str
    capture_ts_ns: int
    content_type: str
    raw_shape: str | None = None
    image_b64: str
    model_version: str
    label: str
    confidence: float
    top_k: list[dict[str, Any]]
    decision: str
    selected_because: list[str]

    def image(self) -> bytes:
        """The frame's bytes; :class:`SchemaError` when ``image_b64`` is not base64 (the schema cannot check it)."""
        try:
            return base64.b64decode(self.image_b64, validate=True)
        except ValueError as exc:  # binascii.Error
            raise SchemaError(f"{self.kind}: image_b64 is not base64 ({exc})") from None


@dataclass(frozen=True, kw_only=True)
class LineHeartbeat(Record):
    """How far one worker has inspected one line, for the line's gate (see its schema)."""

    kind: ClassVar[str] = "line_heartbeat"
    line_id: str
    gate_id: str
    worker_id: str
    inspected_until_ts_ns: int
    frames: int
    sent_ts_ns: int


RECORD_TYPES: dict[str, type[Record]] = {
    cls.kind: cls
    for cls in (InspectionResult, RejectCommand, DeadLetter, LineStats, LineCounts, RetrainingSample, LineHeartbeat)
}
