"""Frame sources for the camera gateway: a folder of images, or the built-in synthetic generator."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import cycle, islice
from pathlib import Path

import cv2

from models import synthetic

IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def synthetic_frames(
    count: int,
    seed: int = 0,
    size: int = 192,
    quality: int = 90,
    classes: tuple[str, ...] = synthetic.CLASSES,
) -> Iterator[tuple[str, bytes, str]]:
    """``count`` synthetic frames as (true label, JPEG bytes, content type)."""
    for label, bgr in synthetic.generate(count, seed=seed, size=size, classes=classes):
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        yield label, buf.tobytes(), "image/jpeg"


def folder_frames(root: Path, count: int | None = None) -> Iterator[tuple[str, bytes, str]]:
    """Images under ``root`` (sorted; the parent folder name is the label), repeated until ``count`` is reached.

    The bytes are sent as stored, so a camera replay is byte-for-byte what is on disk."""
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no .jpg/.jpeg/.png images under {root}")
    chosen = files if count is None else islice(cycle(files), count)
    for path in chosen:
        yield path.parent.name, path.read_bytes(), IMAGE_SUFFIXES[path.suffix.lower()]
