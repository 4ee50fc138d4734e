"""Datasets for training and evaluation: discovery, de-duplication, deterministic splits, augmentation.

Sources: an ImageFolder tree (``<root>/<class>/<file>``; a dataset folder holding ``images/`` works too) or a CSV
manifest with columns ``path,class`` and optionally ``group`` (paths relative to the CSV, or to ``images/`` beside
it). Exact duplicates are removed by content hash *before* splitting, so one picture can never sit on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, decode_image, preprocess_batch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """The data on disk does not match what a run recorded (missing images, conflicting labels)."""


@dataclass(frozen=True)
class ImageRecord:
    path: str
    label: str
    md5: str
    group: str = ""


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def discover(source: Path) -> list[ImageRecord]:
    """Every image of an ImageFolder tree or CSV manifest, sorted by path."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return _from_manifest(source)
    root = source / "images" if (source / "images").is_dir() else source
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset at {source}: expected <root>/<class>/<image> folders or a CSV manifest")
    records = [
        ImageRecord(str(p), p.parent.name, _md5(p))
        for p in sorted(root.glob("*/*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]
    if not records:
        raise FileNotFoundError(f"no images under {root}/<class>/")
    return records


def _from_manifest(csv_path: Path) -> list[ImageRecord]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "class"} <= rows[0].keys():
        raise ValueError(f"{csv_path}: a manifest needs columns 'path' and 'class'")
    base = csv_path.parent
    if not (base / rows[0]["path"]).exists() and (base / "images" / rows[0]["path"]).exists():
        base = base / "images"
    records = []
    for row in rows:
        path = base / row["path"]
        if not path.is_file():
            raise FileNotFoundError(f"{csv_path}: listed image {path} does not exist")
        records.append(ImageRecord(str(path), row["class"], _md5(path), row.get("group") or ""))
    return sorted(records, key=lambda r: r.path)


def dedupe(records: Sequence[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Keep the first record of each content hash. Returns (kept, dropped). A hash seen under two labels is an
    error: the dataset contradicts itself and no split can be right."""
    kept: dict[str, ImageRecord] = {}
    dropped = []
    for rec in records:
        first = kept.get(rec.md5)
        if first is None:
            kept[rec.md5] = rec
            continue
        if first.label != rec.label:
            raise DatasetError(
                f"identical images with different labels: {first.path} ({first.label}), {rec.path} ({rec.label})"
            )
        dropped.append(rec)
    return list(kept.values()), dropped


def stratified_split(
    records: Sequence[ImageRecord], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, list[ImageRecord]]:
    """Deterministic per-class split into train/val/test. Records sharing a non-empty ``group`` move together
    (the group is assigned as a unit, so related images never straddle splits)."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    out: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    # A unit is one ungrouped image or all images of one group; units are stratified by their majority label.
    units: dict[str, list[ImageRecord]] = {}
    for rec in sorted(records, key=lambda r: r.path):
        units.setdefault(f"group:{rec.group}" if rec.group else f"path:{rec.path}", []).append(rec)
    by_label: dict[str, list[list[ImageRecord]]] = defaultdict(list)
    for unit in units.values():
        majority = Counter(r.label for r in unit).most_common(1)[0][0]
        by_label[majority].append(unit)
    for label in sorted(by_label):
        groups = by_label[label]
        order = rng.permutation(len(groups))
        total = sum(len(g) for g in groups)
        targets = [fractions[0] * total, (fractions[0] + fractions[1]) * total]
        count = 0
        for i in order:
            split = "train" if count < targets[0] else "val" if count < targets[1] else "test"
            out[split].extend(groups[i])
            count += len(groups[i])
    return out


def locate(records: Sequence[ImageRecord], root: Path) -> list[ImageRecord]:
    """The given records (e.g. a run's split) as files under ``root``, matched by content hash, so a split still
    resolves after the dataset folder moved. Raises ValueError naming how many are missing."""
    available = {r.md5: r for r in dedupe(discover(root))[0]}
    missing = [r for r in records if r.md5 not in available]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(records)} images of the run are not in {root} (e.g. {missing[0].path})"
        )
    return [ImageRecord(available[r.md5].path, r.label, r.md5, r.group) for r in records]


def fingerprint(records: Sequence[ImageRecord]) -> str:
    """Content fingerprint of a dataset (or split): hashes and labels, independent of paths."""
    h = hashlib.sha256()
    for md5, label in sorted((r.md5, r.label) for r in records):
        h.update(f"{md5}:{label}\n".encode())
    return h.hexdigest()[:16]


def save_split(path: Path, splits: dict[str, list[ImageRecord]]) -> None:
    Path(path).write_text(json.dumps({s: [asdict(r) for r in recs] for s, recs in splits.items()}, indent=0))


def load_split(path: Path) -> dict[str, list[ImageRecord]]:
    data = json.loads(Path(path).read_text())
    return {s: [ImageRecord(**r) for r in recs] for s, recs in data.items()}


# jpeg90: X-SDD's JPEGs are quality ~90 (luminance DC quantiser 3), so a q90 round trip gives the PNG-stored
# images the same compression artifacts as the rest. (A lossless PNG round trip would change nothing.)
# The worker serves frames as the camera sends them: a model trained with jpeg90 should get JPEG frames.
REENCODINGS = ("none", "jpeg90")


def load_rgb(path: str, reencode: str = "none") -> np.ndarray:
    """Decode an image file to RGB, optionally first round-tripping it through JPEG q90 (``jpeg90``) so the
    source file format (e.g. X-SDD's PNG-only class) cannot leak the label."""
    img = decode_image(Path(path).read_bytes())
    if reencode == "none":
        return img
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if reencode == "jpeg90":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    else:
        raise ValueError(f"unknown re-encoding {reencode!r}; use one of {', '.join(REENCODINGS)}")
    if not ok:
        raise ValueError(f"re-encoding {path} failed")
    return decode_image(buf.tobytes())


def train_transforms(size: int, strength: str = "strong", seed: int = 0) -> A.Compose:
    """Geometric + photometric augmentation for surface images (no fixed orientation, varying light)."""
    ops: list[A.BasicTransform] = [
        A.Resize(size, size, interpolation=cv2.INTER_AREA),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
    ]
    if strength == "strong":
        ops += [
            A.Affine(
                scale=(0.85, 1.15),
                translate_percent=(-0.08, 0.08),
                rotate=(-15, 15),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.7,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.7),
            A.RandomGamma(gamma_limit=(75, 130), p=0.4),
            A.CLAHE(clip_limit=2.0, p=0.2),
            A.OneOf(
                [A.GaussNoise(std_range=(0.02, 0.06)), A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=5)],
                p=0.3,
            ),
        ]
    # Albumentations keeps its own RNG (not torch's): seed it, or two runs with one --seed differ.
    return A.Compose(ops, seed=seed)


class ImageDataset(Dataset):
    """Images held decoded in memory (the datasets here are MBs, decoding once saves most of an epoch's CPU).

    Training items go through ``augment`` then the serving normalization; evaluation items go through
    :func:`models.preprocess.preprocess_batch` exactly as the worker does."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        input_size: int,
        *,
        augment: A.Compose | None = None,
        reencode: str = "none",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.records = list(records)
        self.class_index = {c: i for i, c in enumerate(class_names)}
        unknown = {r.label for r in self.records} - self.class_index.keys()
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not among the model's classes {list(class_names)}")
        self.labels = [self.class_index[r.label] for r in self.records]
        self.images = [load_rgb(r.path, reencode) for r in self.records]
        self.input_size = input_size
        self.augment = augment
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        x = preprocess_batch([img], self.input_size, self.mean, self.std)[0]
        return torch.from_numpy(x), self.labels[i]


def class_counts(labels: Sequence[int], num_classes: int) -> list[int]:
    counts = Counter(labels)
    return [counts.get(i, 0) for i in range(num_classes)]


def balanced_sampler(labels: Sequence[int], num_classes: int, seed: int = 0) -> WeightedRandomSampler:
    """Samples every class equally often per epoch (rare defects are seen as often as common ones)."""
    counts = class_counts(labels, num_classes)
    weights = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
