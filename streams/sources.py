"""Frame sources for the camera gateway: a folder of images, a video file, or the built-in synthetic generator.

Every source yields ``(label, image bytes, content type)``; the label is ground truth where the source knows it
(synthetic, class folders) and empty otherwise."""

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


VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v"}


def video_frames(path: Path, count: int | None = None, quality: int = 90) -> Iterator[tuple[str, bytes, str]]:
    """Frames of a video file (anything OpenCV's FFmpeg backend reads), JPEG-encoded like a camera gateway would,
    looping from the start until ``count`` frames were produced."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    produced = 0
    try:
        while count is None or produced < count:
            ok, bgr = capture.read()
            if not ok:
                if produced == 0:
                    raise ValueError(f"video {path} has no readable frames")
                if count is None:
                    return
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            produced += 1
            yield "", buf.tobytes(), "image/jpeg"
    finally:
        capture.release()


def open_source(source: str, count: int, seed: int = 0) -> Iterator[tuple[str, bytes, str]]:
    """``synthetic``, a folder of images, or a video file."""
    if source == "synthetic":
        return synthetic_frames(count, seed=seed)
    path = Path(source)
    if path.is_dir():
        return folder_frames(path, count)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return video_frames(path, count)
    raise ValueError(
        f"source {source!r}: use 'synthetic', a folder of images or a video file ({sorted(VIDEO_SUFFIXES)})"
    )
