"""Synthetic defect images: metal textures under varied lighting with drawn defects, deterministic by seed.

This feeds the demo, the camera simulator and tests. It is a smoke signal for the code path, not evidence
of real-world accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np

Renderer = Callable[[np.ndarray, np.random.Generator], None]


def metal_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """Brushed-metal grey texture with a lighting gradient, BGR uint8."""
    base = rng.uniform(90, 170)
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    # Anisotropic blur turns white noise into brushing marks along a random direction.
    streak = cv2.GaussianBlur(noise, (0, 0), sigmaX=rng.uniform(6, 14), sigmaY=rng.uniform(0.5, 1.2))
    if rng.random() < 0.5:
        streak = streak.T
    streak *= rng.uniform(6, 14) / (streak.std() + 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    light = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(-40, 40)
    grain = rng.normal(0, rng.uniform(2, 5), (size, size))
    img = np.clip(base + streak + light + grain, 0, 255).astype(np.uint8)
    tint = rng.uniform(0.95, 1.05, 3)
    return np.clip(np.stack([img * t for t in tint], axis=-1), 0, 255).astype(np.uint8)


def _scratch(img: np.ndarray, rng: np.random.Generator) -> None:
    size = img.shape[0]
    length = rng.uniform(0.4, 0.8) * size
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    shade = int(rng.choice([rng.uniform(215, 255), rng.uniform(10, 45)]))
    thickness = max(2, size // 70)
    p1, p2 = (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy))
    cv2.line(img, p1, p2, (shade, shade, shade), thickness, cv2.LINE_AA)


def _pit(img: np.ndarray, rng: np.random.Generator) -> None:
    size = img.shape[0]
    for _ in range(rng.integers(1, 5)):
        r = int(rng.uniform(0.03, 0.07) * size)
        c = tuple(int(v) for v in rng.uniform(0.15, 0.85, 2) * size)
        cv2.circle(img, c, r + max(1, r // 4), (225, 225, 225), -1, cv2.LINE_AA)
        cv2.circle(img, c, r, (25, 25, 25), -1, cv2.LINE_AA)


def _crack(img: np.ndarray, rng: np.random.Generator) -> None:
    size = img.shape[0]
    pts = [rng.uniform(0.2, 0.8, 2) * size]
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(rng.integers(10, 18)):
        heading += rng.normal(0, 0.6)
        step = rng.uniform(0.03, 0.06) * size
        pts.append(np.clip(pts[-1] + step * np.array([np.cos(heading), np.sin(heading)]), 0, size - 1))
    poly = np.array(pts, dtype=np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [poly], False, (20, 20, 20), max(2, size // 90), cv2.LINE_AA)


RENDERERS: dict[str, Renderer | None] = {
    "ok": None,
    "scratch": _scratch,
    "pit": _pit,
    "crack": _crack,
}
CLASSES: tuple[str, ...] = tuple(RENDERERS)


def render(label: str, rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """One BGR uint8 image of class ``label``."""
    if label not in RENDERERS:
        raise KeyError(f"unknown synthetic class {label!r}; known: {', '.join(CLASSES)}")
    img = metal_texture(size, rng)
    draw = RENDERERS[label]
    if draw is not None:
        draw(img, rng)
    return img


def generate(
    count: int, seed: int, size: int = 192, classes: tuple[str, ...] = CLASSES
) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` (label, BGR image) pairs, classes cycling round-robin, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = classes[i % len(classes)]
        yield label, render(label, rng, size)
