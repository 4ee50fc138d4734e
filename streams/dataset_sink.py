"""Dataset sink: retraining samples -> an ImageFolder tree + a JSONL manifest, ready for labelling and training.

    <out>/<predicted label>/<part id>.<jpg|png>      the frame exactly as the camera sent it (raw frames as PNG);
                                                    a part id that is not a safe file name: its safe name + a hash
    <out>/manifest.jsonl                            one line per image: path, prediction, why it was selected

Folders start as the model's opinion: a labeller moves files between class folders (or edits ``label`` in the
manifest), then ``defectstream train --data <out>`` trains on it. Files are written atomically and named by part
id, so a sample delivered twice is written once; the consumer commits only after the file and its manifest line are
on disk (both fsynced, the image first), so a crash, even of the host, re-delivers rather than loses. A sample whose
image cannot be read (not base64, a raw frame with a bad shape) is logged and counted as unreadable, as one that
breaks the schema is.
"""

from __future__ import annotations

import hashlib
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


class ManifestError(ValueError):
    """The manifest has a line the sink cannot read; it will not guess which parts it already holds."""


@dataclass
class SinkStats:
    written: int = 0
    duplicates: int = 0
    unreadable: int = 0


def safe_name(text: str) -> str:
    """A file-system-safe name for a part id or label (no path separators, no leading dots)."""
    return _SAFE.sub("_", text).lstrip(".") or "_"


def part_file_stem(part_id: str) -> str:
    """The part id itself when it is a safe name; otherwise its safe name plus a hash of the id, so that ids the
    replacement makes equal (``LOT7/0001`` and ``LOT7_0001``) never share a file."""
    safe = safe_name(part_id)
    if safe == part_id:
        return safe
    return f"{safe}-{hashlib.sha256(part_id.encode()).hexdigest()[:12]}"


def sample_image(sample: RetrainingSample) -> tuple[bytes, str]:
    """The bytes to store and their file extension; raw frames are stored as PNG. :class:`SchemaError` when the
    image cannot be read."""
    data = sample.image()
    if sample.content_type != "image/x-raw":
        return data, _EXTENSIONS[sample.content_type]
    try:
        h, w, c = (int(n) for n in (sample.raw_shape or "").split("x"))
        pixels = np.frombuffer(data, np.uint8).reshape(h, w, c)
    except ValueError as exc:
        raise SchemaError(f"raw sample of shape {sample.raw_shape!r} with {len(data)} bytes: {exc}") from None
    ok, png = cv2.imencode(".png", pixels)
    if not ok:
        raise SchemaError(f"raw sample of shape {sample.raw_shape!r} cannot be stored as PNG")
    return png.tobytes(), _EXTENSIONS[sample.content_type]


def _write_durably(path: Path, data: bytes) -> None:
    """Atomically, and on disk before the manifest line that names it: after a power cut a manifest line must not
    point at a missing or empty file (the part would then count as stored, and its re-delivery as a duplicate)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DatasetSink:
    def __init__(self, settings: Settings, out: Path, *, group_id: str | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._known = self._existing_parts()
        self.stats = SinkStats()
        group = group_id or f"{settings.app_id}-dataset-sink"
        self.consumer = Consumer(consumer_config(settings, group, **{"enable.auto.commit": False}))
        self.consumer.subscribe([settings.topic(topics.RETRAINING_SAMPLES)])

    def _existing_parts(self) -> set[str]:
        """The part ids the manifest already lists. A last line without its newline is an append that a crash (or
        a full disk) cut short: its sample was never committed and comes again, so the fragment is cut off rather
        than left for the next line to be appended to. Any other line that is not JSON stops the sink, naming it."""
        manifest = self.out / MANIFEST
        if not manifest.exists():
            return set()
        text = manifest.read_bytes()
        if text and not text.endswith(b"\n"):
            keep = text.rfind(b"\n") + 1
            log.warning(
                "%s: cutting off an unfinished last line (%d bytes) left by a crash", manifest, len(text) - keep
            )
            with open(manifest, "r+b") as f:
                f.truncate(keep)
                os.fsync(f.fileno())
            text = text[:keep]
        parts = set()
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parts.add(json.loads(line)["part_id"])  # not UTF-8 or not JSON: ValueError
            except (ValueError, KeyError, TypeError) as exc:
                raise ManifestError(
                    f"{manifest} line {number} is not a manifest entry ({exc!r}): fix or remove it"
                ) from None
        return parts

    def write(self, sample: RetrainingSample) -> Path | None:
        """Store one sample; returns its path, or None when this part id is already in the dataset. Raises
        :class:`SchemaError` when the sample's image cannot be read."""
        if sample.part_id in self._known:
            self.stats.duplicates += 1
            return None
        data, extension = sample_image(sample)
        folder = self.out / safe_name(sample.label)
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            _fsync_dir(self.out)
        path = folder / (part_file_stem(sample.part_id) + extension)
        _write_durably(path, data)
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
                written += self.write(RetrainingSample.from_json(msg.value())) is not None
            except SchemaError as exc:
                self.stats.unreadable += 1
                log.error(
                    "unreadable retraining sample at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc
                )
                continue
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
