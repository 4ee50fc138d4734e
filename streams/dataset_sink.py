"""Dataset sink: retraining samples -> an ImageFolder tree + a JSONL manifest, ready for labelling and training.

    <out>/<predicted label>/<part id>.<jpg|png>      the frame exactly as the camera sent it (raw frames as PNG)
    <out>/manifest.jsonl                            one line per image: path, prediction, why it was selected

Folders start as the model's opinion: a labeller moves files between class folders (or edits ``label`` in the
manifest), then ``defectstream train --data <out>`` trains on it. Files are written atomically and named by part
id, so a sample delivered twice is written once; the consumer commits only after the file and its manifest line are
on disk, so a crash re-delivers rather than loses.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from confluent_kafka import Consumer

from schemas.records import RetrainingSample, SchemaError
from streams.kafka import topics
from streams.kafka.config import consumer_config
from streams.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/x-raw": ".png"}


@dataclass
class SinkStats:
    written: int = 0
    duplicates: int = 0
    unreadable: int = 0


def safe_name(text: str) -> str:
    """A file-system-safe name for a part id or label (no path separators, no leading dots)."""
    return _SAFE.sub("_", text).lstrip(".") or "_"


class DatasetSink:
    def __init__(self, settings: Settings, out: Path, *, group_id: str | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        group = group_id or f"{settings.app_id}-dataset-sink"
        self.consumer = Consumer(consumer_config(settings, group, **{"enable.auto.commit": False}))
        self.consumer.subscribe([settings.topic(topics.RETRAINING_SAMPLES)])
        self.stats = SinkStats()
        self._known = self._existing_parts()

    def _existing_parts(self) -> set[str]:
        manifest = self.out / MANIFEST
        if not manifest.exists():
            return set()
        return {json.loads(line)["part_id"] for line in manifest.read_text().splitlines() if line.strip()}

    def write(self, sample: RetrainingSample) -> Path | None:
        """Store one sample; returns its path, or None when this part id is already in the dataset."""
        if sample.part_id in self._known:
            self.stats.duplicates += 1
            return None
        data = sample.image()
        if sample.content_type == "image/x-raw":
            h, w, c = (int(n) for n in (sample.raw_shape or "").split("x"))
            data = cv2.imencode(".png", np.frombuffer(data, np.uint8).reshape(h, w, c))[1].tobytes()
        folder = self.out / safe_name(sample.label)
        folder.mkdir(exist_ok=True)
        path = folder / (safe_name(sample.part_id) + _EXTENSIONS[sample.content_type])
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        entry = {
            "path": str(path.relative_to(self.out)),
            "part_id": sample.part_id,
            "line_id": sample.line_id,
            "camera_id": sample.camera_id,
            "capture_ts_ns": sample.capture_ts_ns,
            "predicted_label": sample.label,
            "confidence": sample.confidence,
            "top_k": sample.top_k,
            "decision": sample.decision,
            "selected_because": sample.selected_because,
            "model_version": sample.model_version,
            "label": None,  # for the labeller
        }
        with open(self.out / MANIFEST, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._known.add(sample.part_id)
        self.stats.written += 1
        return path

    def poll(self, timeout_s: float = 0.5) -> int:
        """Consume what arrived within ``timeout_s``, write it, then commit. Returns samples written."""
        messages = self.consumer.consume(num_messages=100, timeout=timeout_s)
        written = 0
        for msg in messages:
            if msg.error():
                log.error("retraining-sample consumer error: %s", msg.error())
                continue
            try:
                sample = RetrainingSample.from_json(msg.value())
            except SchemaError as exc:
                self.stats.unreadable += 1
                log.error("unreadable retraining sample at offset %d: %s", msg.offset(), exc)
                continue
            written += self.write(sample) is not None
        if messages:
            self.consumer.commit(asynchronous=False)
        return written

    def run(self, stop: threading.Event) -> SinkStats:
        try:
            while not stop.is_set():
                self.poll()
        finally:
            self.consumer.close()
        return self.stats
