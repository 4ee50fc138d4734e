"""Decode -> RGB -> resize -> normalize: the one preprocessing path shared by training-eval and serving."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UndecodableImage(ValueError):
    """Bytes that OpenCV cannot decode into an image (empty, truncated, not an image)."""


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes (JPEG/PNG/...) -> RGB uint8 array (H, W, 3)."""
    if not data:
        raise UndecodableImage("empty payload")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise UndecodableImage(f"OpenCV could not decode {len(data)} bytes as an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


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
