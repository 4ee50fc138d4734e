"""Checkpoints: weights plus everything needed to serve them (classes, input size, normalization, args).

Saved as a plain dict of tensors and JSON-like values, and loaded with ``torch.load(weights_only=True)`` so a
checkpoint can never run code on load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.network import DefectClassifier
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD

FORMAT = "defectstream.checkpoint/1"


class CheckpointError(ValueError):
    pass


@dataclass
class ModelMeta:
    class_names: list[str]
    backbone: str
    input_size: int
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    version: str = "unversioned"
    args: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def save_checkpoint(path: Path, model: DefectClassifier, meta: ModelMeta) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "meta": asdict(meta), "state_dict": model.state_dict()}, tmp)
    tmp.replace(path)  # atomic: a reader never sees half a checkpoint


def load_checkpoint(path: Path) -> tuple[DefectClassifier, ModelMeta]:
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a loadable checkpoint: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    meta = ModelMeta(**blob["meta"])
    model = DefectClassifier(num_classes=len(meta.class_names), backbone=meta.backbone)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not match {meta.backbone}/{len(meta.class_names)} classes: {exc}"
        ) from None
    model.eval()
    return model, meta
