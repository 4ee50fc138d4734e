"""Records the worker writes: one InspectionResult per frame, RejectCommands for gates, DeadLetters.

JSON on the wire, ``schema_version`` in every record so readers can refuse what they do not understand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, TypeVar

from schemas import SCHEMA_VERSION

R = TypeVar("R", bound="Record")


class SchemaError(ValueError):
    pass


@dataclass(frozen=True, kw_only=True)
class Record:
    kind: ClassVar[str] = "record"
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return json.dumps({"kind": self.kind, **asdict(self)}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls: type[R], raw: bytes | str | None) -> R:
        """Parse and validate; every way a record can be wrong raises :class:`SchemaError`, nothing else."""
        if raw is None:
            raise SchemaError(f"{cls.kind}: empty message (tombstone)")
        try:
            data = json.loads(raw)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"{cls.kind}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise SchemaError(f"{cls.kind}: expected a JSON object, got {type(data).__name__}")
        if data.pop("kind", cls.kind) != cls.kind:
            raise SchemaError(f"expected a {cls.kind} record")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(f"{cls.kind}: unsupported schema_version {data.get('schema_version')!r}")
        types = {f.name: f.type for f in fields(cls)}
        unknown = data.keys() - types.keys()
        if unknown:
            raise SchemaError(f"{cls.kind}: unknown field(s) {sorted(unknown)}")
        for name, value in data.items():
            expected = _JSON_TYPES[str(types[name]).split("[")[0]]
            if isinstance(value, bool) or not isinstance(value, expected):
                raise SchemaError(f"{cls.kind}: field {name} must be {types[name]}, got {value!r}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SchemaError(f"{cls.kind}: {exc}") from None


# Field annotation -> accepted JSON value types (booleans are refused for numbers: JSON true is not 1).
_JSON_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "dict": (dict,)}


@dataclass(frozen=True, kw_only=True)
class InspectionResult(Record):
    kind: ClassVar[str] = "inspection_result"
    part_id: str
    line_id: str
    camera_id: str
    capture_ts_ns: int
    model_version: str
    label: str
    confidence: float
    decision: str  # "pass" or "reject"
    worker_id: str
    decided_ts_ns: int
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RejectCommand(Record):
    kind: ClassVar[str] = "reject_command"
    part_id: str
    line_id: str
    gate_id: str
    reason: str  # the defect class, or "unreadable_frame"
    capture_ts_ns: int
    decided_ts_ns: int


@dataclass(frozen=True, kw_only=True)
class DeadLetter(Record):
    kind: ClassVar[str] = "dead_letter"
    reason: str
    detail: str
    headers: dict[str, str]
    payload_bytes: int
    payload_sha256: str
    source_topic: str
    source_partition: int
    source_offset: int
    worker_id: str
