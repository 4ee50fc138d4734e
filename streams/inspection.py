"""Frame batch -> inspection records. Pure: no Kafka, no asyncio, so it runs in an executor thread and
is testable on its own. The Faust agent (streams.worker.app) only moves bytes in and out of topics.

Every incoming frame produces records, never nothing:
- a valid frame: one InspectionResult, plus one RejectCommand when the verdict is not the OK class;
- an invalid frame (bad headers, undecodable image): one DeadLetter and one fail-safe RejectCommand,
  because a part whose picture cannot be read must not pass unseen.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from models.engines.base import InferenceEngine
from models.preprocess import UndecodableImage, decode_image, preprocess_batch
from schemas import frame as frame_schema
from schemas.records import DeadLetter, InspectionResult, RejectCommand
from streams.kafka import topics

log = logging.getLogger(__name__)

UNREADABLE_FRAME = "unreadable_frame"
UNKNOWN_LINE = "unknown"


@dataclass(frozen=True)
class IncomingFrame:
    value: bytes | None
    headers: dict[str, str]
    topic: str
    partition: int
    offset: int
    received_ts_ns: int


@dataclass(frozen=True)
class Outgoing:
    role: str  # topic role from streams.kafka.topics
    key: bytes
    value: bytes


def gate_for_line(line_id: str) -> str:
    """One reject gate per line for now; the mapping lives here so a line with several gates changes one place."""
    return line_id


class FrameInspector:
    def __init__(self, engine: InferenceEngine, *, ok_class: str, worker_id: str, reduced_decode: bool = True):
        if ok_class not in engine.class_names:
            raise ValueError(f"ok class {ok_class!r} is not one of the model's classes {engine.class_names}")
        self.engine = engine
        self.ok_class = ok_class
        self.worker_id = worker_id
        # Decode large JPEGs at 1/2-1/8 resolution when that still covers the model input (bench/model_bench.py
        # measures its cost and its effect on predictions).
        self.decode_min_side = engine.input_size if reduced_decode else None

    def inspect(self, frames: list[IncomingFrame]) -> list[Outgoing]:
        out: list[Outgoing] = []
        valid: list[tuple[IncomingFrame, frame_schema.FrameMeta, np.ndarray]] = []
        t0 = time.perf_counter()
        for frame in frames:
            try:
                meta = frame_schema.parse_frame_headers(frame.headers)
                image = decode_image(frame.value or b"", min_side=self.decode_min_side)
            except frame_schema.InvalidFrame as exc:
                out.extend(self._dead_letter(frame, exc.reason, exc.detail))
                continue
            except UndecodableImage as exc:
                out.extend(self._dead_letter(frame, "undecodable_image", str(exc)))
                continue
            except Exception as exc:  # anything else one frame can raise must cost only that frame
                out.extend(self._dead_letter(frame, "decode_error", repr(exc)))
                continue
            valid.append((frame, meta, image))
        if not valid:
            return out
        batch = preprocess_batch(
            [img for _, _, img in valid], self.engine.input_size, self.engine.mean, self.engine.std
        )
        t1 = time.perf_counter()
        probs = self.engine.predict(batch)
        t2 = time.perf_counter()
        decode_ms = (t1 - t0) * 1000 / len(frames)
        infer_ms = (t2 - t1) * 1000
        for (frame, meta, _), p in zip(valid, probs, strict=True):
            idx = int(np.argmax(p))
            label = self.engine.class_names[idx]
            now_ns = time.time_ns()
            decision = "pass" if label == self.ok_class else "reject"
            result = InspectionResult(
                part_id=meta.part_id,
                line_id=meta.line_id,
                camera_id=meta.camera_id,
                capture_ts_ns=meta.capture_ts_ns,
                model_version=self.engine.version,
                label=label,
                confidence=float(p[idx]),
                decision=decision,
                worker_id=self.worker_id,
                decided_ts_ns=now_ns,
                timings_ms={
                    "queue_wait": round((frame.received_ts_ns - meta.capture_ts_ns) / 1e6, 3),
                    "decode": round(decode_ms, 3),
                    "inference_batch": round(infer_ms, 3),
                    "batch_size": len(valid),
                    "total_since_capture": round((now_ns - meta.capture_ts_ns) / 1e6, 3),
                },
            )
            out.append(Outgoing(topics.RESULTS, meta.part_id.encode(), result.to_json()))
            if decision == "reject":
                out.append(self._reject(meta.part_id, meta.line_id, label, meta.capture_ts_ns))
        return out

    def fail_safe(self, frames: list[IncomingFrame], reason: str, detail: str) -> list[Outgoing]:
        """Dead letters and fail-safe rejects for a whole batch, when inspection itself failed."""
        out: list[Outgoing] = []
        for frame in frames:
            out.extend(self._dead_letter(frame, reason, detail))
        return out

    def _reject(self, part_id: str, line_id: str, reason: str, capture_ts_ns: int) -> Outgoing:
        gate = gate_for_line(line_id)
        cmd = RejectCommand(
            part_id=part_id,
            line_id=line_id,
            gate_id=gate,
            reason=reason,
            capture_ts_ns=capture_ts_ns,
            decided_ts_ns=time.time_ns(),
        )
        # Keyed by gate: all of one gate's commands land on one partition, in decision order.
        return Outgoing(topics.REJECT_COMMANDS, gate.encode(), cmd.to_json())

    def _dead_letter(self, frame: IncomingFrame, reason: str, detail: str) -> list[Outgoing]:
        payload = frame.value or b""
        log.warning("dead letter %s[%d]@%d: %s (%s)", frame.topic, frame.partition, frame.offset, reason, detail)
        letter = DeadLetter(
            reason=reason,
            detail=detail,
            headers=frame.headers,
            payload_bytes=len(payload),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            source_topic=frame.topic,
            source_partition=frame.partition,
            source_offset=frame.offset,
            worker_id=self.worker_id,
        )
        part_id = frame.headers.get(frame_schema.PART_ID) or f"{frame.topic}/{frame.partition}/{frame.offset}"
        line_id = frame.headers.get(frame_schema.LINE_ID) or UNKNOWN_LINE
        if line_id == UNKNOWN_LINE:
            # No gate listens for "unknown": the dead letter is the only trace. Gateways must send line_id.
            log.error("fail-safe reject for %s has no line_id header: no gate will act on it", part_id)
        try:
            capture_ts_ns = int(frame.headers.get(frame_schema.CAPTURE_TS_NS, ""))
        except ValueError:
            capture_ts_ns = frame.received_ts_ns
        return [
            Outgoing(topics.DEAD_LETTERS, part_id.encode(), letter.to_json()),
            self._reject(part_id, line_id, UNREADABLE_FRAME, capture_ts_ns),
        ]
