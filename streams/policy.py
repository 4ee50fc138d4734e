"""What a verdict means on the line: pass / reject / review, the gate deadline, and which frames to keep for
retraining. All of it lives here, as plain functions of a prediction, so it is unit-tested without Kafka.

Specs are strings so they travel in one environment variable each: ``"0.6"`` (every key) or
``"0.6,scratch=0.8,crack=0.75"`` (a default, then overrides per class or per line).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

PASS, REJECT, REVIEW = "pass", "reject", "review"


def parse_keyed(spec: str, cast: Callable[[str], T], name: str) -> tuple[T, dict[str, T]]:
    """``"default,key=value,..."`` -> (default, overrides). The default is required and comes first."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or "=" in parts[0]:
        raise ValueError(f"{name}: {spec!r} must start with a default value, e.g. '0.5' or '0.5,scratch=0.8'")
    try:
        default = cast(parts[0])
        overrides: dict[str, T] = {}
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(part)
            overrides[key.strip()] = cast(value.strip())
    except ValueError as exc:
        raise ValueError(f"{name}: cannot parse {spec!r} ({exc})") from None
    return default, overrides


@dataclass(frozen=True)
class DecisionPolicy:
    """Top class + its confidence -> decision.

    Below the class's threshold the part goes to ``review`` (manual inspection) rather than passing silently or
    being scrapped on a guess; otherwise the OK class passes and every other class is rejected."""

    ok_class: str
    default_threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, ok_class: str, spec: str, class_names: Sequence[str] | None = None) -> DecisionPolicy:
        default, overrides = parse_keyed(spec, float, "decision thresholds")
        policy = cls(ok_class, default, overrides)
        if class_names is not None:
            policy.check(class_names)
        return policy

    def __post_init__(self) -> None:
        for key, value in {"default": self.default_threshold, **self.thresholds}.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"decision threshold for {key} must be within [0, 1], got {value}")

    def check(self, class_names: Sequence[str]) -> None:
        """Refuse thresholds for classes the model does not have (a typo would silently never apply)."""
        if self.ok_class not in class_names:
            raise ValueError(f"ok class {self.ok_class!r} is not one of the model's classes {list(class_names)}")
        unknown = sorted(set(self.thresholds) - set(class_names))
        if unknown:
            raise ValueError(f"decision thresholds name unknown classes {unknown}; model classes: {list(class_names)}")

    def threshold(self, label: str) -> float:
        return self.thresholds.get(label, self.default_threshold)

    def decide(self, label: str, confidence: float) -> str:
        if confidence < self.threshold(label):
            return REVIEW
        return PASS if label == self.ok_class else REJECT


# The longest camera-to-gate travel time taken: an hour (a conveyor is seconds to minutes).
MAX_TRAVEL_MS = 3_600_000.0


@dataclass(frozen=True)
class DeadlinePolicy:
    """When a reject command stops being useful: the frame's ``gate_deadline_ts_ns`` header if it has one, else
    capture time + the line's camera-to-gate travel time."""

    default_travel_ms: float = 500.0
    travel_ms: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A travel time of zero or less makes every command late, and one that is not finite (or days long) a
        # deadline no clock reaches or no 64-bit integer holds: a typo, refused at start-up, not met per frame.
        for line, ms in {"default": self.default_travel_ms, **self.travel_ms}.items():
            if not 0.0 < ms <= MAX_TRAVEL_MS:
                raise ValueError(f"line travel ms for {line} must be within (0, {MAX_TRAVEL_MS:.0f}], got {ms}")

    @classmethod
    def from_spec(cls, spec: str) -> DeadlinePolicy:
        default, overrides = parse_keyed(spec, float, "line travel ms")
        return cls(default, overrides)

    def deadline_ns(self, line_id: str, capture_ts_ns: int, header_deadline_ns: int | None = None) -> int:
        if header_deadline_ns is not None:
            return header_deadline_ns
        return capture_ts_ns + int(self.travel_ms.get(line_id, self.default_travel_ms) * 1e6)


@dataclass(frozen=True)
class RetrainingPolicy:
    """Which inspected frames become retraining samples, and why.

    - ``low_confidence``: top-class confidence below ``low_confidence_below`` (set it above the decision
      thresholds to also collect the uneasy passes and rejects);
    - ``review``: every review decision (a person is going to look at the part anyway: label it), unless
      ``reviews`` is off (a line whose reviews are labelled elsewhere, or so many that a copy of each frame on the
      retraining topic is more than the labellers want);
    - ``audit``: a share ``audit_rate`` of passes, chosen by a hash of the part id, so the choice is reproducible
      and a re-delivered frame is chosen again or not at all."""

    low_confidence_below: float = 0.8
    audit_rate: float = 0.01
    reviews: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError(f"audit rate must be within [0, 1], got {self.audit_rate}")

    def reasons(self, part_id: str, confidence: float, decision: str) -> list[str]:
        why = []
        if confidence < self.low_confidence_below:
            why.append("low_confidence")
        if decision == REVIEW and self.reviews:
            why.append("review")
        if decision == PASS and _unit_hash(part_id) < self.audit_rate:
            why.append("audit")
        return why


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) from a string (same on every worker and every run)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64
