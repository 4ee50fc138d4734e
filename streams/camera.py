"""Camera gateway: publishes frames (image bytes + metadata headers) to the frames topic with confluent-kafka.

Usable as a library class by a real gateway: create a :class:`CameraGateway`, call :meth:`send` per frame,
:meth:`flush` before exiting.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.frame import FrameMeta
from streams.kafka import topics
from streams.kafka.config import producer_config
from streams.quantiles import nearest_rank
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CameraStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    part_labels: dict[str, str] = field(default_factory=dict)  # part id -> source label (ground truth if known)
    delivery_ms: list[float] = field(default_factory=list)  # produce -> broker acknowledgement, per frame
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def rate_fps(self) -> float:
        elapsed = (self.finished or time.monotonic()) - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0

    def delivery_ms_quantile(self, q: float) -> float:
        return nearest_rank(self.delivery_ms, q)


class CameraGateway:
    def __init__(self, settings: Settings, *, camera_id: str | None = None, line_id: str | None = None):
        self.settings = settings
        self.camera_id = camera_id or settings.camera_id
        self.line_id = line_id or settings.line_id
        self.topic = settings.topic(topics.FRAMES)
        self.producer = Producer(producer_config(settings))
        self.stats = CameraStats()
        # Part ids must be unique across restarts of the gateway, not only within one run.
        self._run = uuid.uuid4().hex[:8]
        self._seq = 0

    def next_part_id(self) -> str:
        self._seq += 1
        return f"{self.camera_id}-{self._run}-{self._seq:07d}"

    def send(
        self, image: bytes, *, content_type: str = "image/jpeg", part_id: str | None = None, label: str = ""
    ) -> str:
        meta = FrameMeta(
            part_id=part_id or self.next_part_id(),
            line_id=self.line_id,
            camera_id=self.camera_id,
            capture_ts_ns=time.time_ns(),
            content_type=content_type,
        )
        while True:
            try:
                produced = time.perf_counter()
                self.producer.produce(
                    self.topic,
                    key=meta.part_id.encode(),
                    value=image,
                    headers=meta.to_headers(),
                    on_delivery=lambda err, msg, t=produced: self._delivered(err, msg, t),
                )
                break
            except BufferError:
                # The local queue is full (broker slow or down): wait for deliveries instead of dropping the frame.
                self.producer.poll(0.1)
            except KafkaException as exc:  # e.g. a frame larger than the topic allows: counted, not silent
                self.stats.sent += 1
                self.stats.failed += 1
                self.stats.errors.append(str(exc))
                log.error("frame %s refused by the producer: %s", meta.part_id, exc)
                return meta.part_id
        self.stats.sent += 1
        if label:
            self.stats.part_labels[meta.part_id] = label
        self.producer.poll(0)
        return meta.part_id

    def _delivered(self, err: KafkaError | None, msg: Message, produced: float) -> None:
        if err is None:
            self.stats.delivered += 1
            self.stats.delivery_ms.append((time.perf_counter() - produced) * 1000)
        else:
            self.stats.failed += 1
            self.stats.errors.append(str(err))
            log.error("frame %s not delivered: %s", msg.key(), err)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        return self.producer.flush(timeout_s)

    def run(
        self,
        frames: Iterable[tuple[str, bytes, str]],
        fps: float | None = None,
        jitter_ms: float = 0.0,
        seed: int | None = None,
        stop: threading.Event | None = None,
    ) -> CameraStats:
        """Send every frame of ``frames`` at ``fps`` (None: as fast as possible; ``jitter_ms``: each frame moved by
        up to that much either way, without drifting from the nominal rate), then flush. ``stop`` set: no frame
        after the one being sent; what was sent is still flushed."""
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
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    nominal += interval
                self.send(image, content_type=content_type, label=label)
        finally:
            remaining = self.flush()
            self.stats.finished = time.monotonic()
            if remaining:
                log.error("%d frames still undelivered after flush", remaining)
        return self.stats
