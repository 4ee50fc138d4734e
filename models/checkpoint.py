"""Checkpoints: weights plus everything needed to serve them (classes, input size, normalization, args).

Saved as a plain dict of tensors and JSON-like values, and loaded with ``torch.load(weights_only=True)`` so a
checkpoint can never run code on load.
"""

from __future__ import annotations

import os
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


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` that leaves ``path`` either as it was or complete: a training run killed (SIGKILL, OOM, power
    cut) while saving must still resume from, or serve, the previous file instead of a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file, or a power cut can leave it empty
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, model: DefectClassifier, meta: ModelMeta) -> None:
    save_atomically({"format": FORMAT, "meta": asdict(meta), "state_dict": model.state_dict()}, path)


def load_resume_state(path: Path, device: str = "cpu") -> dict[str, Any]:
    """A training run's ``last.pt`` (model, optimizer, scheduler, epoch, args), refused with a clear error when it
    cannot be read, e.g. one left truncated by a version that did not save it atomically."""
    try:
        state = torch.load(Path(path), map_location=device, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a loadable resume state ({exc}); move it away to restart the run from its beginning"
        ) from None
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a training run's resume state")
    return state


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
