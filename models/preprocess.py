"""Decode -> RGB -> resize -> normalize: the one preprocessing path shared by training-eval and serving."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UndecodableImage(ValueError):
    """Bytes that OpenCV cannot decode into an image (empty, truncated, not an image)."""


_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header without decoding it; None if ``data`` is not a JPEG."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None


def decode_image(data: bytes, min_side: int | None = None) -> np.ndarray:
    """Encoded image bytes (JPEG/PNG/...) -> RGB uint8 array (H, W, 3).

    With ``min_side`` (the model's input size), a JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8
    resolution by libjpeg's DCT scaling, the largest factor that keeps the short side >= ``min_side``. The result
    is then resized to the input anyway; skipping most of the IDCT work is what makes 1280x1024 frames cheap."""
    if not data:
        raise UndecodableImage("empty payload")
    buf = np.frombuffer(data, dtype=np.uint8)
    flag = cv2.IMREAD_COLOR
    if min_side:
        size = jpeg_size(data)
        if size is not None:
            short = min(size)
            flag = next((f for factor, f in _REDUCED_FLAGS if short // factor >= min_side), cv2.IMREAD_COLOR)
    img = cv2.imdecode(buf, flag)
    if img is None or img.size == 0:
        raise UndecodableImage(f"OpenCV could not decode {len(data)} bytes as an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_raw(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Raw uint8 pixels (H, W, C) with C = 1 (gray) or 3 (BGR), as cameras without an encoder send them -> RGB."""
    h, w, c = shape
    if c not in (1, 3) or h <= 0 or w <= 0:
        raise UndecodableImage(f"raw shape {h}x{w}x{c} is not HxWx1 or HxWx3")
    if len(data) != h * w * c:
        raise UndecodableImage(f"raw frame has {len(data)} bytes, shape {h}x{w}x{c} needs {h * w * c}")
    img = np.frombuffer(data, dtype=np.uint8).reshape(h, w, c)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if c == 1 else cv2.COLOR_BGR2RGB)


def preprocess_batch(
    images: Sequence[np.ndarray],
    input_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """RGB uint8 images of any size -> float32 NCHW batch, resized to ``input_size`` and normalized."""
    batch = np.empty((len(images), input_size, input_size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        batch[i] = cv2.resize(img, (input_size, input_size), interpolation=cv2.INTER_AREA)
    scale = np.asarray(std, dtype=np.float32) * 255.0
    shift = np.asarray(mean, dtype=np.float32) * 255.0
    out = (batch.astype(np.float32) - shift) / scale
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
