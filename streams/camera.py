"""Camera gateway: publishes frames (image bytes + metadata headers) to the frames topic with confluent-kafka.

Usable as a library class by a real gateway: create a :class:`CameraGateway`, call :meth:`send` per frame,
:meth:`poll` while no frame is being sent, :meth:`flush` before exiting.

The gateway is the only part of the pipeline that knows a frame exists before Kafka has it. A frame that is refused,
fails, or is not in Kafka by its gate deadline (the ``gate_deadline_ts_ns`` it carries, or capture time + the line's
travel time, as the worker computes it) can get no timely verdict, and no late command either while it is stuck:
its part would pass the gate unverified, and nothing downstream could tell. So the gateway reports each such frame
once, at the moment it knows, to ``on_unconfirmed(meta, reason)``: a PLC bridge diverts the part there. Without a
callback it is counted and logged. A frame past its deadline stays queued for delivery (librdkafka's
``message.timeout.ms``), so it is still inspected and audited once Kafka has it; its late verdict may reach the
gate too, so a bridge acts once per part id. The handler runs inside :meth:`send`, :meth:`poll` and :meth:`flush`,
in the thread that calls them: it must be quick (note the part, return). Capture times and deadlines are wall-clock
ns since the Unix epoch, as the frame contract says; a camera's own hardware clock would make every frame overdue at
once, or none.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer

from schemas.frame import FrameMeta
from streams.kafka import topics
from streams.kafka.config import producer_config
from streams.policy import DeadlinePolicy
from streams.quantiles import nearest_rank, recent_samples
from streams.settings import Settings
from streams.spell_log import SpellLog

log = logging.getLogger(__name__)

# Why a frame was reported to ``on_unconfirmed``; the reason passed is one of these, then ": " and the detail.
REFUSED = "refused"  # the producer did not take it (e.g. larger than the topic allows)
DELIVERY_FAILED = "delivery_failed"  # librdkafka gave up on it
NOT_IN_KAFKA_BY_DEADLINE = "not_in_kafka_by_deadline"  # the broker had not acknowledged it by its gate deadline

UnconfirmedFrameHandler = Callable[[FrameMeta, str], None]

# The longest the gateway waits in librdkafka without looking for frames past their deadline.
POLL_SLICE_S = 0.02
# Delivery errors kept as text in CameraStats.errors (every one is counted in CameraStats.failed; logged per spell).
RECENT_ERRORS = 100


@dataclass
class CameraStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    unconfirmed_by_deadline: int = 0  # not acknowledged by the broker by the frame's gate deadline (maybe later)
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))  # the latest; all in failed
    # Part id -> source label (ground truth if known), only with CameraGateway(keep_part_labels=True).
    part_labels: dict[str, str] = field(default_factory=dict)
    delivery_ms: deque[float] = field(default_factory=recent_samples)  # produce -> broker ack, the latest frames
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def rate_fps(self) -> float:
        elapsed = (self.finished or time.monotonic()) - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0

    def delivery_ms_quantile(self, q: float) -> float:
        return nearest_rank(self.delivery_ms, q)


class PendingFrames:
    """Frames the broker has not acknowledged yet, by gate deadline: which ones are past it, each reported once.

    Each frame is a ticket unique to its send, so a part id sent twice is two frames. Thread-safe: a gateway may
    poll in a thread of its own, and delivery reports are served in whichever thread polls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets = itertools.count()
        self._pending: dict[int, tuple[FrameMeta, int]] = {}  # ticket -> (frame, deadline ns)
        self._deadlines: list[tuple[int, int]] = []  # (deadline ns, ticket), a heap; settled ones left in it

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, meta: FrameMeta, deadline_ns: int) -> int:
        """Returns the frame's ticket, for :meth:`settle`."""
        with self._lock:
            ticket = next(self._tickets)
            self._pending[ticket] = (meta, deadline_ns)
            heapq.heappush(self._deadlines, (deadline_ns, ticket))
            # Settled frames leave the heap only at their deadline: bound it when deadlines are far out.
            if len(self._deadlines) > 2 * len(self._pending) + 1024:
                self._deadlines = [(deadline, t) for t, (_, deadline) in self._pending.items()]
                heapq.heapify(self._deadlines)
            return ticket

    def settle(self, ticket: int) -> bool:
        """The frame is acknowledged or has failed; returns whether it was still pending (not reported overdue)."""
        with self._lock:
            return self._pending.pop(ticket, None) is not None

    def overdue(self, now_ns: int) -> list[tuple[FrameMeta, int]]:
        """The pending frames whose deadline is at or before ``now_ns``, with it; no longer pending after this."""
        due = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now_ns:
                _, ticket = heapq.heappop(self._deadlines)
                frame = self._pending.pop(ticket, None)
                if frame is not None:
                    due.append(frame)
        return due


class CameraGateway:
    def __init__(
        self,
        settings: Settings,
        *,
        camera_id: str | None = None,
        line_id: str | None = None,
        on_unconfirmed: UnconfirmedFrameHandler | None = None,
        keep_part_labels: bool = False,
    ):
        self.settings = settings
        self.camera_id = camera_id or settings.camera_id
        self.line_id = line_id or settings.line_id
        self.topic = settings.topic(topics.FRAMES)
        self.producer = Producer(producer_config(settings))
        self.stats = CameraStats()
        self.on_unconfirmed = on_unconfirmed
        # For the demo and tests that check every part sent: it grows by a part id per frame.
        self.keep_part_labels = keep_part_labels
        self._deadline_policy = DeadlinePolicy.from_spec(settings.line_travel_ms)
        self._pending = PendingFrames()
        self._late_log = SpellLog("frames not in Kafka by their gate deadline", logger=log)
        # After an outage librdkafka fails every queued frame at once (message.timeout.ms): one line each flooded
        # the log. Each one is still counted and handed to on_unconfirmed unless it was already reported.
        self._failed_log = SpellLog("frames not delivered", level=logging.ERROR, logger=log)
        # Part ids must be unique across restarts of the gateway, not only within one run.
        self._run = uuid.uuid4().hex[:8]
        self._seq = 0

    def next_part_id(self) -> str:
        self._seq += 1
        return f"{self.camera_id}-{self._run}-{self._seq:07d}"

    def send(
        self,
        image: bytes,
        *,
        content_type: str = "image/jpeg",
        part_id: str | None = None,
        label: str = "",
        capture_ts_ns: int | None = None,
        gate_deadline_ts_ns: int | None = None,
    ) -> str:
        """Queue one frame for the frames topic; returns its part id. ``capture_ts_ns`` defaults to now;
        ``gate_deadline_ts_ns`` (sent as a header) to capture time + the line's travel time."""
        meta = FrameMeta(
            part_id=part_id or self.next_part_id(),
            line_id=self.line_id,
            camera_id=self.camera_id,
            capture_ts_ns=capture_ts_ns if capture_ts_ns is not None else time.time_ns(),
            content_type=content_type,
            gate_deadline_ts_ns=gate_deadline_ts_ns,
        )
        # Pending from here: a frame waiting for room in librdkafka's queue is just as far from Kafka.
        ticket = self._pending.add(
            meta, self._deadline_policy.deadline_ns(meta.line_id, meta.capture_ts_ns, gate_deadline_ts_ns)
        )
        while True:
            try:
                produced = time.perf_counter()
                self.producer.produce(
                    self.topic,
                    key=meta.part_id.encode(),
                    value=image,
                    headers=meta.to_headers(),
                    on_delivery=lambda err, msg, t=produced, m=meta, k=ticket: self._delivered(err, t, m, k),
                )
                break
            except BufferError:
                # The local queue is full (broker slow or down): wait for deliveries instead of dropping the frame,
                # reporting the frames (this one too) whose deadline passes meanwhile.
                self.poll(0.1)
            except KafkaException as exc:  # e.g. a frame larger than the topic allows: counted, not silent
                self.stats.sent += 1
                self.stats.failed += 1
                self.stats.errors.append(str(exc))
                log.error("frame %s refused by the producer: %s", meta.part_id, exc)
                if self._pending.settle(ticket):
                    self._unconfirmed(meta, f"{REFUSED}: {exc}")
                return meta.part_id
        self.stats.sent += 1
        if label and self.keep_part_labels:
            self.stats.part_labels[meta.part_id] = label
        self.poll(0)
        return meta.part_id

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports for up to ``timeout_s`` and report the frames now past their gate deadline.
        :meth:`send`, :meth:`flush` and :meth:`run` do this; a gateway that sends nothing for a while calls it
        meanwhile (every few tens of ms), or a frame stuck before Kafka is reported only with the next frame."""
        self.producer.poll(timeout_s)
        now_ns = time.time_ns()
        for meta, deadline_ns in self._pending.overdue(now_ns):
            self.stats.unconfirmed_by_deadline += 1
            ms_late = (now_ns - deadline_ns) / 1e6
            self._late_log.note(f"frame {meta.part_id} not in Kafka by its gate deadline", ms_late)
            self._unconfirmed(meta, f"{NOT_IN_KAFKA_BY_DEADLINE}: {ms_late:.0f} ms past it; delivery goes on")
        self._late_log.flush(only_if_due=True)
        self._failed_log.flush(only_if_due=True)

    def _unconfirmed(self, meta: FrameMeta, reason: str) -> None:
        if self.on_unconfirmed is None:
            return
        try:
            self.on_unconfirmed(meta, reason)
        except Exception:  # the bridge's own fault must not stop the frames behind this one
            log.exception("on_unconfirmed failed for frame %s (%s)", meta.part_id, reason)

    def _delivered(self, err: KafkaError | None, produced: float, meta: FrameMeta, ticket: int) -> None:
        still_pending = self._pending.settle(ticket)
        if err is None:
            self.stats.delivered += 1
            self.stats.delivery_ms.append((time.perf_counter() - produced) * 1000)
        else:
            self.stats.failed += 1
            self.stats.errors.append(str(err))
            self._failed_log.note(f"frame {meta.part_id} not delivered: {err}")
            if still_pending:  # a frame already reported past its deadline is not reported twice
                self._unconfirmed(meta, f"{DELIVERY_FAILED}: {err}")

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait up to ``timeout_s`` (0: one pass, no wait) for outstanding deliveries, reporting frames past their
        deadline meanwhile; returns how many are still undelivered."""
        end = time.monotonic() + timeout_s
        while True:
            remaining = self.producer.flush(max(0.0, min(POLL_SLICE_S, end - time.monotonic())))
            self.poll(0)
            if not remaining or time.monotonic() >= end:
                self._late_log.flush()
                self._failed_log.flush()
                return len(self.producer)

    def run(
        self,
        frames: Iterable[tuple[str, bytes, str]],
        fps: float | None = None,
        jitter_ms: float = 0.0,
        seed: int | None = None,
        stop: threading.Event | None = None,
        flush_timeout_s: float = 30.0,
    ) -> CameraStats:
        """Send every frame of ``frames`` at ``fps`` (None: as fast as possible; ``jitter_ms``: each frame moved by
        up to that much either way, without drifting from the nominal rate), then flush for up to
        ``flush_timeout_s``. ``stop`` set: no frame after the one being sent; what was sent is still flushed.
        Between frames it polls; while ``frames`` itself blocks (a slow source), it does not."""
        interval = 1.0 / fps if fps else 0.0
        rng = random.Random(seed)
        nominal = time.perf_counter()
        self.stats.started = time.monotonic()
        try:
            for label, image, content_type in frames:
                if stop is not None and stop.is_set():
                    break
                if interval:
                    due = nominal + (rng.uniform(-jitter_ms, jitter_ms) / 1000 if jitter_ms else 0.0)
                    while (delay := due - time.perf_counter()) > 0:
                        # librdkafka takes whole milliseconds: a shorter wait would be poll(0) in a busy loop (7x the
                        # camera's CPU at 250 frames/s). At most 1 ms late, and the schedule does not drift.
                        self.poll(max(min(delay, POLL_SLICE_S), 0.001))
                    nominal += interval
                self.send(image, content_type=content_type, label=label)
        finally:
            remaining = self.flush(flush_timeout_s)
            self.stats.finished = time.monotonic()
            if remaining:
                log.error("%d frames still undelivered after flush", remaining)
        return self.stats
