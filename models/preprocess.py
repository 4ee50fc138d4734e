"""Decode -> RGB -> resize -> normalize: the one preprocessing path shared by training-eval and serving."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import simplejpeg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UndecodableImage(ValueError):
    """Bytes that cannot be decoded into a whole image (empty, truncated, corrupt, not an image, too large)."""


# libjpeg's DCT scaling factors, largest first, and OpenCV's flags for them (its decode of CMYK/YCCK JPEGs).
_REDUCED_FLAGS = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_jpeg(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8"


def is_png(data: bytes) -> bool:
    return data[:8] == _PNG_SIGNATURE


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk without decoding it; None if ``data`` is not a PNG."""
    if not is_png(data) or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_image(data: bytes, min_side: int | None = None, *, max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes (JPEG/PNG/...) -> RGB uint8 array (H, W, 3).

    JPEGs are decoded by libjpeg-turbo through simplejpeg in strict mode: libjpeg's "corrupt data" warnings (a stray
    marker or lost bytes inside the image data; most single bit errors pass unnoticed, JPEG has no checksum) are
    errors. OpenCV decodes such a JPEG without complaint and fills what it lost with flat grey, which a classifier
    can take for a good part. Pixels are the same as OpenCV's.

    With ``min_side`` (the model's input size), a JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8
    resolution by libjpeg's DCT scaling, the largest factor that keeps the short side >= ``min_side``. The result
    is then resized to the input anyway; skipping most of the IDCT work is what makes 1280x1024 frames cheap.

    ``max_pixels`` refuses JPEGs and PNGs whose header declares more pixels, before any pixel is decoded: a PNG of
    a few KB can declare 30000x30000 and cost gigabytes."""
    if not data:
        raise UndecodableImage("empty payload")
    if is_jpeg(data):
        return _decode_jpeg(data, min_side, max_pixels)
    size = png_size(data)
    if size is not None and max_pixels is not None and size[0] * size[1] > max_pixels:
        raise UndecodableImage(f"PNG of {size[0]}x{size[1]} pixels is above the limit of {max_pixels}")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise UndecodableImage(f"OpenCV could not decode {len(data)} bytes as an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode_jpeg(data: bytes, min_side: int | None, max_pixels: int | None) -> np.ndarray:
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise UndecodableImage(f"not a readable JPEG: {exc}") from None
    if max_pixels is not None and width * height > max_pixels:
        raise UndecodableImage(f"JPEG of {width}x{height} pixels is above the limit of {max_pixels}")
    factor = 1
    if min_side:
        factor = next((f for f in _REDUCED_FLAGS if min(width, height) // f >= min_side), 1)
    scaled = {"min_factor": factor, "min_height": -(-height // factor), "min_width": -(-width // factor)}
    try:
        if colorspace in ("CMYK", "YCCK"):
            # libjpeg-turbo cannot turn these into RGB: check the data strictly, take the pixels from OpenCV.
            simplejpeg.decode_jpeg(data, colorspace="CMYK", strict=True, **scaled)
            flag = _REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR)
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
            if bgr is None or bgr.size == 0:
                raise ValueError("OpenCV could not decode it")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **scaled)
    except ValueError as exc:
        raise UndecodableImage(f"corrupt or truncated JPEG ({len(data)} bytes): {exc}") from None


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
