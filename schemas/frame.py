"""The frame contract: the Kafka value is the image; metadata travels in headers (``schemas/json/frame_headers``).

Headers are UTF-8 strings so that any gateway (or ``kcat -H part_id=...``) can write them:

=======================  ========  ===============================================================
header                   required  meaning
=======================  ========  ===============================================================
``part_id``              yes       unique id of the inspected part (also the message key)
``line_id``              yes       production line; selects the reject gate ([A-Za-z0-9._-])
``camera_id``            yes       camera that took the frame
``capture_ts_ns``        yes       capture time, ns since the Unix epoch (UTC), fits an int64
``content_type``         no        ``image/jpeg`` (default), ``image/png`` or ``image/x-raw``
``raw_shape``            raw only  ``HxWxC`` of an ``image/x-raw`` value: uint8, C = 1 (gray) or 3 (BGR)
``station``              no        inspection station on the line
``trace_id``             no        carried into every record of this frame
``gate_deadline_ts_ns``  no        latest useful arrival at the gate; default capture + line travel time
=======================  ========  ===============================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas import contracts

PART_ID = "part_id"
LINE_ID = "line_id"
CAMERA_ID = "camera_id"
CAPTURE_TS_NS = "capture_ts_ns"
CONTENT_TYPE = "content_type"
RAW_SHAPE = "raw_shape"
STATION = "station"
TRACE_ID = "trace_id"
GATE_DEADLINE_TS_NS = "gate_deadline_ts_ns"

REQUIRED_HEADERS = (PART_ID, LINE_ID, CAMERA_ID, CAPTURE_TS_NS)
RAW = "image/x-raw"


class InvalidFrame(ValueError):
    """A frame that breaks the contract; ``reason`` is a short machine-readable code for the dead letter."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FrameMeta:
    part_id: str
    line_id: str
    camera_id: str
    capture_ts_ns: int
    content_type: str = "image/jpeg"
    raw_shape: tuple[int, int, int] | None = None
    station: str | None = None
    trace_id: str | None = None
    gate_deadline_ts_ns: int | None = None

    def to_headers(self) -> list[tuple[str, bytes]]:
        pairs = [
            (PART_ID, self.part_id),
            (LINE_ID, self.line_id),
            (CAMERA_ID, self.camera_id),
            (CAPTURE_TS_NS, str(self.capture_ts_ns)),
            (CONTENT_TYPE, self.content_type),
        ]
        if self.raw_shape is not None:
            pairs.append((RAW_SHAPE, "x".join(str(n) for n in self.raw_shape)))
        for name, value in ((STATION, self.station), (TRACE_ID, self.trace_id)):
            if value is not None:
                pairs.append((name, value))
        if self.gate_deadline_ts_ns is not None:
            pairs.append((GATE_DEADLINE_TS_NS, str(self.gate_deadline_ts_ns)))
        return [(k, v.encode()) for k, v in pairs]


def headers_to_dict(headers: Iterable[tuple[str, bytes | None]] | dict | None) -> dict[str, str]:
    """Kafka headers (list of pairs from confluent-kafka, or a mapping from Faust) as a str dict.

    Undecodable bytes are replaced rather than raised on, so the dead letter can still show them."""
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, dict) else headers
    out: dict[str, str] = {}
    for key, value in pairs:
        if isinstance(value, bytes | bytearray):
            out[key] = bytes(value).decode("utf-8", errors="replace")
        else:
            out[key] = "" if value is None else str(value)
    return out


def header_is_valid(name: str, value: str) -> bool:
    """Whether one header's value is what the contract allows (for a frame whose other headers may not be)."""
    return contracts.property_is_valid("frame_headers", name, value)


def parse_frame_headers(headers: dict[str, str]) -> FrameMeta:
    """Validate against ``frame_headers.schema.json``; ``InvalidFrame('missing_headers' | 'bad_header')``."""
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name)]
    if missing:
        raise InvalidFrame("missing_headers", f"missing required header(s): {', '.join(missing)}")
    problems = contracts.errors("frame_headers", headers)
    if problems:
        raise InvalidFrame("bad_header", "; ".join(problems))
    raw_shape = None
    if RAW_SHAPE in headers:
        h, w, c = (int(n) for n in headers[RAW_SHAPE].split("x"))
        raw_shape = (h, w, c)
    deadline = headers.get(GATE_DEADLINE_TS_NS)
    return FrameMeta(
        part_id=headers[PART_ID],
        line_id=headers[LINE_ID],
        camera_id=headers[CAMERA_ID],
        capture_ts_ns=int(headers[CAPTURE_TS_NS]),
        content_type=headers.get(CONTENT_TYPE) or "image/jpeg",
        raw_shape=raw_shape,
        station=headers.get(STATION),
        trace_id=headers.get(TRACE_ID),
        gate_deadline_ts_ns=int(deadline) if deadline else None,
    )
