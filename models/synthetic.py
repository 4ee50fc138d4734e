"""Synthetic defect images of machined/stamped metal parts, deterministic by seed.

Sixteen classes: ``ok`` and fifteen defect types, rendered on brushed-metal textures under varied lighting with a
machined feature (a drilled hole) that every class but ``missing_feature`` shows. This feeds the demo, the camera
simulator and tests; it is a check that the code path works, not evidence of accuracy on real parts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

GENERATOR_VERSION = 4  # bump when any renderer changes, so cached models trained on old images are retrained

Renderer = Callable[[np.ndarray, np.random.Generator], None]


def metal_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """Brushed-metal grey texture with a lighting gradient, BGR uint8."""
    base = rng.uniform(95, 165)
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    # Anisotropic blur turns white noise into brushing marks along one direction.
    streak = cv2.GaussianBlur(noise, (0, 0), sigmaX=rng.uniform(6, 14), sigmaY=rng.uniform(0.5, 1.2))
    if rng.random() < 0.5:
        streak = streak.T
    streak *= rng.uniform(5, 12) / (streak.std() + 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    light = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(-35, 35)
    grain = rng.normal(0, rng.uniform(2, 4), (size, size))
    img = np.clip(base + streak + light + grain, 0, 255).astype(np.float32)
    tint = rng.uniform(0.96, 1.04, 3)
    return np.clip(np.stack([img * t for t in tint], axis=-1), 0, 255).astype(np.uint8)


def _pt(rng: np.random.Generator, size: int, lo: float = 0.2, hi: float = 0.8) -> tuple[int, int]:
    x, y = rng.uniform(lo, hi, 2) * size
    return int(x), int(y)


def _grey(v: float) -> tuple[int, int, int]:
    return (int(v), int(v), int(v))


def _hole(img: np.ndarray, rng: np.random.Generator) -> None:
    """The machined feature: a drilled hole with a chamfer highlight, in one image corner region."""
    size = img.shape[0]
    r = int(rng.uniform(0.07, 0.10) * size)
    cx = int(rng.choice([0.18, 0.82]) * size + rng.uniform(-0.03, 0.03) * size)
    cy = int(rng.choice([0.18, 0.82]) * size + rng.uniform(-0.03, 0.03) * size)
    cv2.circle(img, (cx, cy), r + max(2, r // 4), _grey(rng.uniform(185, 225)), -1, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r, _grey(rng.uniform(10, 35)), -1, cv2.LINE_AA)


def _blend(img: np.ndarray, layer: np.ndarray, mask: np.ndarray) -> None:
    m = mask[..., None].astype(np.float32)
    img[:] = np.clip(img * (1 - m) + layer * m, 0, 255).astype(np.uint8)


def _soft_blob(size: int, rng: np.random.Generator, radius: float, irregular: bool = True) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    c = _pt(rng, size, 0.3, 0.7)
    axes = (int(radius * size * rng.uniform(0.7, 1.3)), int(radius * size * rng.uniform(0.5, 1.0)))
    cv2.ellipse(mask, c, axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
    if irregular:
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), size / 25)
        mask *= noise > np.median(noise) * rng.uniform(0.9, 1.0)
    return cv2.GaussianBlur(mask, (0, 0), size / 60)


def scratch(img: np.ndarray, rng: np.random.Generator) -> None:
    """A straight groove, bright where it catches the light or dark in shadow; always in contrast with the surface
    (a bright scratch on bright metal along the brushing is invisible, so it would be an ``ok`` image labelled
    ``scratch``)."""
    size = img.shape[0]
    length, angle = rng.uniform(0.45, 0.8) * size, rng.uniform(0, np.pi)
    cx, cy = _pt(rng, size, 0.35, 0.65)
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    bright = rng.random() < 0.5 if img.mean() < 130 else False
    shade = rng.uniform(225, 255) if bright else rng.uniform(10, 40)
    # At least 2 px at the native size, so the groove survives resizing to a small model input.
    width = max(2, size // 80)
    cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), _grey(shade), width, cv2.LINE_AA)


def dent(img: np.ndarray, rng: np.random.Generator) -> None:
    """A smooth depression: shaded dark on one side, bright on the other (light from one direction)."""
    size = img.shape[0]
    r = rng.uniform(0.12, 0.2) * size
    cx, cy = _pt(rng, size, 0.35, 0.65)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
    bowl = np.exp(-d2 * 1.5)
    angle = rng.uniform(0, 2 * np.pi)
    slope = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / r
    shade = bowl * slope * rng.uniform(60, 90)
    img[:] = np.clip(img.astype(np.float32) + shade[..., None], 0, 255).astype(np.uint8)


def crack(img: np.ndarray, rng: np.random.Generator) -> None:
    size = img.shape[0]

    def walk(start: np.ndarray, heading: float, steps: int) -> list[np.ndarray]:
        pts = [start]
        for _ in range(steps):
            heading += rng.normal(0, 0.7)
            pts.append(
                np.clip(
                    pts[-1] + rng.uniform(0.025, 0.05) * size * np.array([np.cos(heading), np.sin(heading)]),
                    0,
                    size - 1,
                )
            )
        return pts

    main = walk(np.array(_pt(rng, size, 0.3, 0.7), np.float64), rng.uniform(0, 2 * np.pi), int(rng.integers(12, 20)))
    branches = [
        walk(main[int(rng.integers(2, len(main) - 2))], rng.uniform(0, 2 * np.pi), int(rng.integers(3, 7)))
        for _ in range(rng.integers(1, 3))
    ]
    for pts in [main, *branches]:
        cv2.polylines(
            img,
            [np.array(pts, np.int32).reshape(-1, 1, 2)],
            False,
            _grey(rng.uniform(5, 30)),
            max(2, size // 96),
            cv2.LINE_AA,
        )


def porosity(img: np.ndarray, rng: np.random.Generator) -> None:
    """A cluster of many pinholes."""
    size = img.shape[0]
    cx, cy = _pt(rng, size, 0.3, 0.7)
    spread = rng.uniform(0.08, 0.15) * size
    for _ in range(rng.integers(18, 40)):
        x, y = int(cx + rng.normal(0, spread)), int(cy + rng.normal(0, spread))
        cv2.circle(
            img, (x, y), max(1, int(rng.uniform(0.006, 0.014) * size)), _grey(rng.uniform(5, 35)), -1, cv2.LINE_AA
        )


def burr(img: np.ndarray, rng: np.random.Generator) -> None:
    """Bright ragged slivers of material standing off one edge of the part."""
    size = img.shape[0]
    edge = rng.integers(0, 4)
    for _ in range(rng.integers(4, 8)):
        t = rng.uniform(0.15, 0.85) * size
        w, h = rng.uniform(0.02, 0.05) * size, rng.uniform(0.06, 0.14) * size
        tri = np.array([[t - w, 0], [t + w, 0], [t + rng.normal(0, w), h]], np.float32)
        if edge == 1:
            tri[:, 1] = size - 1 - tri[:, 1]
        elif edge == 2:
            tri = tri[:, ::-1]
        elif edge == 3:
            tri = tri[:, ::-1].copy()
            tri[:, 0] = size - 1 - tri[:, 0]
        cv2.fillConvexPoly(img, tri.astype(np.int32), _grey(rng.uniform(215, 250)), cv2.LINE_AA)


def chip(img: np.ndarray, rng: np.random.Generator) -> None:
    """A piece broken out of a corner: dark background showing, with a bright fracture edge."""
    size = img.shape[0]
    corner = np.array([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]][rng.integers(0, 4)], np.float32)
    direction = np.sign(np.array([size / 2, size / 2]) - corner)
    a, b = rng.uniform(0.18, 0.32, 2) * size
    poly = np.array(
        [
            corner,
            corner + np.array([direction[0] * a, 0]),
            corner + direction * rng.uniform(0.3, 0.6, 2) * [a, b],
            corner + np.array([0, direction[1] * b]),
        ],
        np.int32,
    )
    cv2.fillPoly(img, [poly], _grey(rng.uniform(5, 25)), cv2.LINE_AA)
    cv2.polylines(img, [poly[1:]], False, _grey(rng.uniform(200, 240)), max(1, size // 90), cv2.LINE_AA)


def corrosion(img: np.ndarray, rng: np.random.Generator) -> None:
    """Rust: orange-brown blotches with their own grain."""
    size = img.shape[0]
    mask = _soft_blob(size, rng, rng.uniform(0.15, 0.25))
    grain = rng.normal(0, 18, (size, size, 1))
    rust = np.array([rng.uniform(20, 45), rng.uniform(55, 85), rng.uniform(120, 160)], np.float32) + grain
    _blend(img, rust, mask * rng.uniform(0.75, 0.95))


def oil_stain(img: np.ndarray, rng: np.random.Generator) -> None:
    """A large, smooth, slightly dark and glossy film."""
    size = img.shape[0]
    mask = cv2.GaussianBlur(_soft_blob(size, rng, rng.uniform(0.22, 0.32), irregular=False), (0, 0), size / 30)
    film = img.astype(np.float32) * rng.uniform(0.45, 0.6) + np.array(
        [rng.uniform(5, 20), 0, rng.uniform(0, 10)], np.float32
    )
    _blend(img, film, mask)


def discoloration(img: np.ndarray, rng: np.random.Generator) -> None:
    """Heat tint / burn: a broad blue-violet to straw-yellow band."""
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) * 2
    # The band always crosses the middle of the part, so no sample is a tint hidden in a corner (= looks OK).
    mask = np.clip(1 - np.abs(t - rng.uniform(-0.15, 0.15)) * rng.uniform(1.2, 1.8), 0, 1)
    tint = np.array([rng.uniform(150, 200), rng.uniform(70, 110), rng.uniform(90, 140)], np.float32)
    if rng.random() < 0.5:
        tint = np.array([rng.uniform(40, 80), rng.uniform(150, 190), rng.uniform(180, 220)], np.float32)  # straw
    _blend(img, tint, mask * 0.75)


def inclusion(img: np.ndarray, rng: np.random.Generator) -> None:
    """Dark slag streaks rolled into the surface, all along one direction."""
    size = img.shape[0]
    angle = rng.uniform(0, 180)
    for _ in range(rng.integers(2, 5)):
        # Short, fat and parallel: longer streaks read as crack segments, rounder ones as pits.
        axes = (int(rng.uniform(0.04, 0.08) * size), max(2, int(rng.uniform(0.010, 0.016) * size)))
        cv2.ellipse(
            img,
            _pt(rng, size, 0.25, 0.75),
            axes,
            angle + rng.normal(0, 5),
            0,
            360,
            _grey(rng.uniform(15, 45)),
            -1,
            cv2.LINE_AA,
        )


def pitting(img: np.ndarray, rng: np.random.Generator) -> None:
    """A few medium round pits, each with a bright rim."""
    size = img.shape[0]
    for _ in range(rng.integers(2, 5)):
        r = int(rng.uniform(0.025, 0.045) * size)
        c = _pt(rng, size, 0.3, 0.7)
        cv2.circle(img, c, r + max(1, r // 3), _grey(rng.uniform(200, 235)), -1, cv2.LINE_AA)
        cv2.circle(img, c, r, _grey(rng.uniform(20, 50)), -1, cv2.LINE_AA)


def weld_spatter(img: np.ndarray, rng: np.random.Generator) -> None:
    """Small bright solidified beads with a shadow on one side."""
    size = img.shape[0]
    shadow = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1)])
    for _ in range(rng.integers(6, 14)):
        r = max(2, int(rng.uniform(0.012, 0.025) * size))
        x, y = _pt(rng, size, 0.15, 0.85)
        cv2.circle(
            img, (int(x + shadow[0] * r), int(y + shadow[1] * r)), r, _grey(rng.uniform(20, 50)), -1, cv2.LINE_AA
        )
        cv2.circle(img, (x, y), r, _grey(rng.uniform(225, 255)), -1, cv2.LINE_AA)


def deformation(img: np.ndarray, rng: np.random.Generator) -> None:
    """A bent/warped region: the whole surface pattern (brushing, hole) is displaced by a wave."""
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    amp, period = rng.uniform(0.04, 0.07) * size, rng.uniform(0.35, 0.6) * size
    phase = rng.uniform(0, 2 * np.pi)
    if rng.random() < 0.5:
        map_x, map_y = xx + amp * np.sin(2 * np.pi * yy / period + phase), yy
    else:
        map_x, map_y = xx, yy + amp * np.sin(2 * np.pi * xx / period + phase)
    warped = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    # Bending also changes how light falls on the surface: shade along the wave.
    shade = (np.cos(2 * np.pi * (yy if map_y is yy else xx) / period + phase) * rng.uniform(15, 30))[..., None]
    img[:] = np.clip(warped.astype(np.float32) + shade, 0, 255).astype(np.uint8)


def contamination(img: np.ndarray, rng: np.random.Generator) -> None:
    """Fibres and dust on the part: short smooth curves and light specks."""
    size = img.shape[0]
    for _ in range(rng.integers(2, 5)):
        p0 = np.array(_pt(rng, size), np.float64)
        ctrl, p1 = p0 + rng.normal(0, 0.12, 2) * size, p0 + rng.normal(0, 0.15, 2) * size
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t**2 * p1
        colour = (int(rng.uniform(120, 200)), int(rng.uniform(60, 120)), int(rng.uniform(30, 80)))
        cv2.polylines(img, [curve.astype(np.int32).reshape(-1, 1, 2)], False, colour, max(1, size // 130), cv2.LINE_AA)
    for _ in range(rng.integers(15, 40)):
        cv2.circle(img, _pt(rng, size, 0.1, 0.9), max(1, size // 160), _grey(rng.uniform(225, 255)), -1)


def missing_feature(img: np.ndarray, rng: np.random.Generator) -> None:
    """The part without its drilled hole (handled in :func:`render`: the hole is simply not drilled)."""


RENDERERS: dict[str, Renderer | None] = {
    "ok": None,
    "scratch": scratch,
    "dent": dent,
    "crack": crack,
    "porosity": porosity,
    "burr": burr,
    "chip": chip,
    "corrosion": corrosion,
    "oil_stain": oil_stain,
    "discoloration": discoloration,
    "inclusion": inclusion,
    "pitting": pitting,
    "weld_spatter": weld_spatter,
    "deformation": deformation,
    "missing_feature": missing_feature,
    "contamination": contamination,
}
CLASSES: tuple[str, ...] = tuple(RENDERERS)


def render(label: str, rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """One BGR uint8 image of class ``label``."""
    if label not in RENDERERS:
        raise KeyError(f"unknown synthetic class {label!r}; known: {', '.join(CLASSES)}")
    img = metal_texture(size, rng)
    if label != "missing_feature":
        _hole(img, rng)
    # The defect goes on top of the machined feature, never under it: a defect the hole covers would be an image
    # that looks OK but carries a defect label (and deformation must warp the hole too).
    draw = RENDERERS[label]
    if draw is not None:
        draw(img, rng)
    return img


def generate(
    count: int, seed: int, size: int = 192, classes: tuple[str, ...] = CLASSES
) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` (label, BGR image) pairs, classes cycling round-robin, fully determined by ``seed``."""
    unknown = set(classes) - set(RENDERERS)
    if unknown:
        raise KeyError(f"unknown synthetic classes {sorted(unknown)}")
    rng = np.random.default_rng(seed)
    for i in range(count):
        label = classes[i % len(classes)]
        yield label, render(label, rng, size)


def write_imagefolder(out: Path, per_class: int, seed: int, size: int = 192, classes: tuple[str, ...] = CLASSES) -> int:
    """Write ``per_class`` PNG images per class as ``out/<class>/<class>_<n>.png``; returns the number written.

    PNG for every class: one lossless format, so the file format carries no label information."""
    out = Path(out)
    written = 0
    for i, (label, img) in enumerate(generate(per_class * len(classes), seed, size, classes)):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(folder / f"{label}_{i // len(classes):05d}.png"), img):
            raise OSError(f"could not write into {folder}")
        written += 1
    return written


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Write a synthetic 16-class defect dataset (ImageFolder, PNG)", add_help=add_help
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (<out>/<class>/<file>.png)")
    p.add_argument("--per-class", type=int, default=100, help="images per class (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same images (default: 0)")
    p.add_argument("--size", type=int, default=192, help="image side in pixels (default: 192)")
    return p


def main(args: argparse.Namespace) -> int:
    written = write_imagefolder(args.out, args.per_class, args.seed, args.size)
    print(f"wrote {written} images ({len(CLASSES)} classes x {args.per_class}) to {args.out}")
    return written
