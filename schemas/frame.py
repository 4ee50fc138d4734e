"""The frame contract: the Kafka value is the encoded image (JPEG/PNG bytes); metadata travels in headers.

Headers are UTF-8 strings so that any gateway (or ``kcat -H part_id=...``) can write them:

=================  ========  ===============================================
header             required  meaning
=================  ========  ===============================================
``part_id``        yes       unique id of the inspected part (also the key)
``line_id``        yes       production line; selects the reject gate
``camera_id``      yes       camera that took the frame
``capture_ts_ns``  yes       capture time, integer ns since the Unix epoch (UTC)
``content_type``   no        ``image/jpeg`` (default) or ``image/png``
=================  ========  ===============================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PART_ID = "part_id"
LINE_ID = "line_id"
CAMERA_ID = "camera_id"
CAPTURE_TS_NS = "capture_ts_ns"
CONTENT_TYPE = "content_type"

REQUIRED_HEADERS = (PART_ID, LINE_ID, CAMERA_ID, CAPTURE_TS_NS)
CONTENT_TYPES = ("image/jpeg", "image/png")


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

    def to_headers(self) -> list[tuple[str, bytes]]:
        return [
            (PART_ID, self.part_id.encode()),
            (LINE_ID, self.line_id.encode()),
            (CAMERA_ID, self.camera_id.encode()),
            (CAPTURE_TS_NS, str(self.capture_ts_ns).encode()),
            (CONTENT_TYPE, self.content_type.encode()),
        ]


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


def parse_frame_headers(headers: dict[str, str]) -> FrameMeta:
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name)]
    if missing:
        raise InvalidFrame("missing_headers", f"missing required header(s): {', '.join(missing)}")
    try:
        capture_ts_ns = int(headers[CAPTURE_TS_NS])
    except ValueError:
        raise InvalidFrame(
            "bad_header",
            f"{CAPTURE_TS_NS} must be an integer (ns since epoch), got {headers[CAPTURE_TS_NS]!r}",
        ) from None
    content_type = headers.get(CONTENT_TYPE) or "image/jpeg"
    if content_type not in CONTENT_TYPES:
        raise InvalidFrame("bad_header", f"{CONTENT_TYPE} {content_type!r} not one of {', '.join(CONTENT_TYPES)}")
    return FrameMeta(
        part_id=headers[PART_ID],
        line_id=headers[LINE_ID],
        camera_id=headers[CAMERA_ID],
        capture_ts_ns=capture_ts_ns,
        content_type=content_type,
    )
