"""Frame batch -> inspection records. Pure: no Kafka, no asyncio, so it runs in an executor thread, serves the
HTTP predict endpoint too, and is testable on its own. The Faust agent (streams.worker.app) only moves bytes.

Every incoming frame produces records, never nothing:
- a valid frame: one InspectionResult; a RejectCommand when the decision is ``reject`` or ``review`` (action says
  which lane); a RetrainingSample when the retraining policy selects it;
- an invalid frame (bad headers, empty, oversized, undecodable): one DeadLetter and one fail-safe RejectCommand
  (reason ``unreadable_frame``), because a part whose picture cannot be read must not pass unseen.
A verdict decided after the part's deadline is still sent, flagged ``late``: the gate decides what to do.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from models.engines.base import InferenceEngine
from models.preprocess import UndecodableImage, decode_image, decode_raw, is_jpeg, is_png, preprocess_batch
from schemas import frame as frame_schema
from schemas.records import DeadLetter, InspectionResult, Record, RejectCommand, RetrainingSample
from streams.kafka import topics
from streams.kafka.config import MAX_MESSAGE_BYTES
from streams.policy import PASS, REVIEW, DeadlinePolicy, DecisionPolicy, RetrainingPolicy
from streams.settings import Settings
from streams.spell_log import SpellLog

log = logging.getLogger(__name__)

UNREADABLE_FRAME = "unreadable_frame"
UNKNOWN_LINE = "unknown"
TOP_K = 3
# base64 grows a payload by 4/3; a sample whose image would not fit one Kafka message is logged and skipped.
MAX_SAMPLE_IMAGE_BYTES = (MAX_MESSAGE_BYTES - 128 * 1024) * 3 // 4


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
    """A record for one output topic, encoded once, where it is built: in the worker, results, commands and
    retraining samples in the decide stage's thread and dead letters in the decode stage's, so the event loop only
    sends bytes (encoding in `deliver` was 16% of the loop's samples in a py-spy --gil profile of a burst; the
    profile was not kept). Only the rare whole-batch fail-safe still encodes on the loop."""

    role: str  # topic role from streams.kafka.topics
    key: bytes
    record: Record
    value: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", self.record.to_json())


def gate_for_line(line_id: str) -> str:
    """One reject gate per line for now; the mapping lives here so a line with several gates changes one place."""
    return line_id


@dataclass(frozen=True)
class ServingModel:
    """An engine and the decision policy checked against its classes: swapped together, atomically."""

    engine: InferenceEngine
    decisions: DecisionPolicy

    @property
    def version(self) -> str:
        return self.engine.version


@dataclass(frozen=True)
class DecodedBatch:
    """What the decode stage hands to the inference stage."""

    serving: ServingModel
    valid: list[tuple[IncomingFrame, frame_schema.FrameMeta]]
    batch: np.ndarray | None  # preprocessed images of ``valid``, None when no frame was valid
    unreadable: list[Outgoing]  # dead letters and fail-safe rejects of the invalid frames
    decode_ms: float  # per frame, over the whole batch


@dataclass(frozen=True)
class InferredBatch:
    """What the inference stage hands to the decision stage."""

    decoded: DecodedBatch
    probs: np.ndarray | None  # class probabilities of ``decoded.valid``, None when no frame was valid
    infer_ms: float  # the batch's forward pass


class FrameInspector:
    def __init__(
        self,
        engine: InferenceEngine,
        *,
        decisions: DecisionPolicy,
        deadlines: DeadlinePolicy | None = None,
        retraining: RetrainingPolicy | None = None,
        worker_id: str,
        reduced_decode: bool = True,
        max_frame_bytes: int = 8 * 1024 * 1024,
        max_frame_pixels: int = 40_000_000,
        dead_letter_payload_max_bytes: int = 1024 * 1024,
    ):
        decisions.check(engine.class_names)
        self._serving = ServingModel(engine, decisions)
        self._swap_lock = threading.Lock()
        self.deadlines = deadlines or DeadlinePolicy()
        self.retraining = retraining
        self.worker_id = worker_id
        self.reduced_decode = reduced_decode
        self.max_frame_bytes = max_frame_bytes
        self.max_frame_pixels = max_frame_pixels
        self.dead_letter_payload_max_bytes = dead_letter_payload_max_bytes
        self.late_log = SpellLog("late commands", logger=log)

    @classmethod
    def from_settings(cls, engine: InferenceEngine, settings: Settings) -> FrameInspector:
        return cls(
            engine,
            decisions=DecisionPolicy.from_spec(settings.ok_class, settings.decision_thresholds),
            deadlines=DeadlinePolicy.from_spec(settings.line_travel_ms),
            retraining=RetrainingPolicy(
                low_confidence_below=settings.retrain_low_confidence_below,
                audit_rate=settings.retrain_audit_rate,
                reviews=settings.retrain_reviews,
            ),
            worker_id=settings.worker_id,
            reduced_decode=settings.reduced_decode,
            max_frame_bytes=settings.max_frame_bytes,
            max_frame_pixels=settings.max_frame_pixels,
            dead_letter_payload_max_bytes=settings.dead_letter_payload_max_bytes,
        )

    @property
    def serving(self) -> ServingModel:
        return self._serving

    def swap_engine(self, engine: InferenceEngine) -> ServingModel:
        """Serve ``engine`` from the next batch on. A batch in flight finishes on the engine it started with.
        Refuses (ValueError) an engine whose classes the decision policy does not fit, keeping the old one."""
        with self._swap_lock:
            policy = self._serving.decisions
            policy.check(engine.class_names)
            old = self._serving
            self._serving = ServingModel(engine, policy)
        log.info("model swapped: %s -> %s", old.version, engine.version)
        return old

    def inspect(self, frames: list[IncomingFrame]) -> list[Outgoing]:
        """All three stages in the calling thread: ``decode``, ``infer``, ``decide``."""
        return self.decide(self.infer(self.decode(frames)))

    def decode(self, frames: list[IncomingFrame], serving: ServingModel | None = None) -> DecodedBatch:
        """Stage 1: headers, decode and preprocess; invalid frames become dead letters and fail-safe rejects here.
        The model is chosen once per batch (``serving``, else the one serving now), so a hot reload never mixes two
        models in one batch. With several decode threads the caller chooses it, in the order batches are taken."""
        serving = serving or self._serving
        engine = serving.engine
        min_side = engine.input_size if self.reduced_decode else None
        out: list[Outgoing] = []
        valid: list[tuple[IncomingFrame, frame_schema.FrameMeta, np.ndarray]] = []
        t0 = time.perf_counter()
        for frame in frames:
            try:
                meta = frame_schema.parse_frame_headers(frame.headers)
                image = self._decode(frame.value, meta, min_side)
            except frame_schema.InvalidFrame as exc:
                out.extend(self._unreadable(frame, exc.reason, exc.detail))
                continue
            except UndecodableImage as exc:
                out.extend(self._unreadable(frame, "undecodable_image", str(exc)))
                continue
            except Exception as exc:  # anything else one frame can raise must cost only that frame
                out.extend(self._unreadable(frame, "decode_error", repr(exc)))
                continue
            valid.append((frame, meta, image))
        images = [img for _, _, img in valid]
        batch = preprocess_batch(images, engine.input_size, engine.mean, engine.std) if images else None
        decode_ms = round((time.perf_counter() - t0) * 1000 / len(frames), 3) if frames else 0.0
        return DecodedBatch(serving, [(frame, meta) for frame, meta, _ in valid], batch, out, decode_ms)

    def infer(self, decoded: DecodedBatch) -> InferredBatch:
        """Stage 2: one forward pass for the batch's valid frames; nothing else, so a worker's inference thread
        goes straight on to the next batch."""
        if decoded.batch is None:
            return InferredBatch(decoded, None, 0.0)
        t1 = time.perf_counter()
        probs = decoded.serving.engine.predict(decoded.batch)
        t2 = time.perf_counter()
        return InferredBatch(decoded, probs, round((t2 - t1) * 1000, 3))

    def decide(self, inferred: InferredBatch) -> list[Outgoing]:
        """Stage 3: a verdict (and its commands and samples) per valid frame, after the dead letters."""
        decoded = inferred.decoded
        out = list(decoded.unreadable)
        if inferred.probs is None:
            return out
        for (frame, meta), p in zip(decoded.valid, inferred.probs, strict=True):
            if not np.isfinite(p).all():
                # A broken model (or an FP16 overflow) must not become a verdict; NaN is not JSON either, so
                # every reader would refuse the result. Fail safe, like a frame that cannot be read.
                out.extend(self._unreadable(frame, "non_finite_output", f"the model returned {p.tolist()}"))
                continue
            out.extend(
                self._verdict(decoded.serving, frame, meta, p, decoded.decode_ms, inferred.infer_ms, len(decoded.valid))
            )
        return out

    def fail_safe(self, frames: list[IncomingFrame], reason: str, detail: str) -> list[Outgoing]:
        """Dead letters and fail-safe rejects for a whole batch, when inspection itself failed."""
        out: list[Outgoing] = []
        for frame in frames:
            out.extend(self._unreadable(frame, reason, detail))
        return out

    def _decode(self, value: bytes | None, meta: frame_schema.FrameMeta, min_side: int | None) -> np.ndarray:
        if not value:
            raise frame_schema.InvalidFrame("empty_payload", "the message value is empty")
        if len(value) > self.max_frame_bytes:
            raise frame_schema.InvalidFrame(
                "oversized_payload", f"{len(value)} bytes is above the worker's limit of {self.max_frame_bytes}"
            )
        if meta.content_type == frame_schema.RAW:
            assert meta.raw_shape is not None  # the header schema requires it for raw frames
            return decode_raw(value, meta.raw_shape)
        if not (is_jpeg(value) or is_png(value)):
            # The contract's formats. OpenCV would decode others too (TIFF, BMP, ...), unchecked for size.
            raise UndecodableImage(f"neither JPEG nor PNG (it starts with {value[:8].hex()})")
        return decode_image(value, min_side=min_side, max_pixels=self.max_frame_pixels)

    def _verdict(
        self,
        serving: ServingModel,
        frame: IncomingFrame,
        meta: frame_schema.FrameMeta,
        p: np.ndarray,
        decode_ms: float,
        infer_ms: float,
        batch_size: int,
    ) -> list[Outgoing]:
        engine = serving.engine
        order = np.argsort(p)[::-1]
        label = engine.class_names[int(order[0])]
        confidence = float(p[order[0]])
        top_k = [{"label": engine.class_names[int(i)], "probability": round(float(p[i]), 6)} for i in order[:TOP_K]]
        decision = serving.decisions.decide(label, confidence)
        deadline = self.deadlines.deadline_ns(meta.line_id, meta.capture_ts_ns, meta.gate_deadline_ts_ns)
        now_ns = time.time_ns()
        late = now_ns > deadline
        result = InspectionResult(
            part_id=meta.part_id,
            line_id=meta.line_id,
            camera_id=meta.camera_id,
            station=meta.station,
            trace_id=meta.trace_id,
            capture_ts_ns=meta.capture_ts_ns,
            deadline_ts_ns=deadline,
            model_name=engine.model_name,
            model_version=engine.version,
            label=label,
            confidence=min(1.0, confidence),
            top_k=top_k,
            decision=decision,
            late=late,
            timings_ms={
                "queue_wait": round((frame.received_ts_ns - meta.capture_ts_ns) / 1e6, 3),
                "decode": decode_ms,
                "inference": infer_ms,
                "total_since_capture": round((now_ns - meta.capture_ts_ns) / 1e6, 3),
            },
            batch_size=batch_size,
            worker_id=self.worker_id,
            decided_ts_ns=now_ns,
        )
        # Results keyed by line: one line's results stay in order on one partition (the worker's line counts are
        # keyed the same way, streams.worker.app).
        out = [Outgoing(topics.RESULTS, meta.line_id.encode(), result)]
        if decision != PASS:
            out.append(
                self._command(
                    meta.part_id,
                    meta.line_id,
                    action="review" if decision == REVIEW else "reject",
                    reason="low_confidence" if decision == REVIEW else "defect",
                    label=label,
                    capture_ts_ns=meta.capture_ts_ns,
                    deadline_ts_ns=deadline,
                    model_version=engine.version,
                    trace_id=meta.trace_id,
                )
            )
        why = self.retraining.reasons(meta.part_id, confidence, decision) if self.retraining else []
        if why:
            sample = self._sample(frame, meta, result, why)
            if sample is not None:
                out.append(sample)
        return out

    def _sample(
        self, frame: IncomingFrame, meta: frame_schema.FrameMeta, result: InspectionResult, why: list[str]
    ) -> Outgoing | None:
        payload = frame.value or b""
        if len(payload) > MAX_SAMPLE_IMAGE_BYTES:
            log.warning("retraining sample for %s skipped: %d bytes do not fit one message", meta.part_id, len(payload))
            return None
        sample = RetrainingSample(
            part_id=meta.part_id,
            line_id=meta.line_id,
            camera_id=meta.camera_id,
            capture_ts_ns=meta.capture_ts_ns,
            content_type=meta.content_type,
            raw_shape=None if meta.raw_shape is None else "x".join(str(n) for n in meta.raw_shape),
            image_b64=base64.b64encode(payload).decode(),
            model_version=result.model_version,
            label=result.label,
            confidence=result.confidence,
            top_k=result.top_k,
            decision=result.decision,
            selected_because=why,
        )
        return Outgoing(topics.RETRAINING_SAMPLES, meta.part_id.encode(), sample)

    def _command(
        self,
        part_id: str,
        line_id: str,
        *,
        action: str,
        reason: str,
        label: str | None,
        capture_ts_ns: int,
        deadline_ts_ns: int,
        model_version: str | None,
        trace_id: str | None,
    ) -> Outgoing:
        gate = gate_for_line(line_id)
        now_ns = time.time_ns()
        cmd = RejectCommand(
            part_id=part_id,
            line_id=line_id,
            gate_id=gate,
            action=action,
            reason=reason,
            label=label,
            late=now_ns > deadline_ts_ns,
            capture_ts_ns=capture_ts_ns,
            decided_ts_ns=now_ns,
            deadline_ts_ns=deadline_ts_ns,
            model_version=model_version,
            trace_id=trace_id,
        )
        if cmd.late:
            self.late_log.note(f"late {action} command for {part_id} on {gate}", (now_ns - deadline_ts_ns) / 1e6)
        # Keyed by gate: all of one gate's commands land on one partition, in decision order.
        return Outgoing(topics.REJECT_COMMANDS, gate.encode(), cmd)

    def _unreadable(self, frame: IncomingFrame, reason: str, detail: str) -> list[Outgoing]:
        payload = frame.value or b""
        log.warning("dead letter %s[%d]@%d: %s (%s)", frame.topic, frame.partition, frame.offset, reason, detail)
        letter = DeadLetter(
            reason=reason,
            detail=detail,
            headers=frame.headers,
            payload_bytes=len(payload),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            payload_b64=base64.b64encode(payload).decode()
            if len(payload) <= self.dead_letter_payload_max_bytes
            else None,
            source_topic=frame.topic,
            source_partition=frame.partition,
            source_offset=frame.offset,
            worker_id=self.worker_id,
            received_ts_ns=frame.received_ts_ns,
        )
        part_id = frame.headers.get(frame_schema.PART_ID) or f"{frame.topic}/{frame.partition}/{frame.offset}"
        line_id = frame.headers.get(frame_schema.LINE_ID) or UNKNOWN_LINE
        if line_id == UNKNOWN_LINE:
            # No gate listens for "unknown": the dead letter is the only trace. Gateways must send line_id.
            log.error("fail-safe reject for %s has no line_id header: no gate will act on it", part_id)
        elif not frame_schema.header_is_valid(frame_schema.LINE_ID, line_id):
            log.error(
                "fail-safe reject for %s has line_id %r, not a valid line id: no gate may act on it", part_id, line_id
            )
        # Only header values the contract allows: Python's int() takes 4300 digits, "+1_0" and spaces, and a
        # timestamp beyond JSON's reach would make this fail-safe itself fail, batch after batch.
        capture_ts_ns = _timestamp_or(frame.headers, frame_schema.CAPTURE_TS_NS, frame.received_ts_ns)
        header_deadline = _timestamp_or(frame.headers, frame_schema.GATE_DEADLINE_TS_NS, None)
        return [
            # Keyed by line like the results (the worker's line counts take the line from this key).
            Outgoing(topics.DEAD_LETTERS, line_id.encode(), letter),
            self._command(
                part_id,
                line_id,
                action="reject",
                reason=UNREADABLE_FRAME,
                label=None,
                capture_ts_ns=capture_ts_ns,
                deadline_ts_ns=self.deadlines.deadline_ns(line_id, capture_ts_ns, header_deadline),
                model_version=None,
                trace_id=frame.headers.get(frame_schema.TRACE_ID),
            ),
        ]


def _timestamp_or(headers: dict[str, str], name: str, default: int | None) -> int | None:
    text = headers.get(name)
    return int(text) if text is not None and frame_schema.header_is_valid(name, text) else default
