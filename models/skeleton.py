"""A small classifier trained in seconds on the synthetic source, for the demo and the pipeline tests.

It exercises the real model code path (network, preprocessing, checkpoint, engine); its accuracy on
synthetic images says nothing about real parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from models import synthetic
from models.checkpoint import ModelMeta, save_checkpoint
from models.preprocess import preprocess_batch
from models.training import accuracy, train_classifier

log = logging.getLogger(__name__)

RECIPE = {
    "backbone": "resnet18",
    "input_size": 64,
    "train_per_class": 100,
    "test_per_class": 25,
    "image_size": 192,
    "epochs": 8,
    "seed": 0,
    "classes": ["ok", "scratch", "pitting", "crack"],
    "generator_version": synthetic.GENERATOR_VERSION,
}


def _dataset(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    images, labels = [], []
    classes = tuple(RECIPE["classes"])
    for label, bgr in synthetic.generate(count, seed=seed, size=RECIPE["image_size"], classes=classes):
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        labels.append(RECIPE["classes"].index(label))
    return preprocess_batch(images, RECIPE["input_size"]), labels


def ensure_skeleton_model(cache_dir: Path) -> Path:
    """Path to the cached skeleton checkpoint, training it first (about 20 s on 2 cores) if missing."""
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / "models" / f"skeleton-{digest}.pt"
    if path.exists():
        return path
    n_classes = len(RECIPE["classes"])
    x_train, y_train = _dataset(RECIPE["train_per_class"] * n_classes, seed=RECIPE["seed"])
    x_test, y_test = _dataset(RECIPE["test_per_class"] * n_classes, seed=RECIPE["seed"] + 1)
    result = train_classifier(
        x_train, y_train, n_classes, backbone=RECIPE["backbone"], epochs=RECIPE["epochs"], seed=RECIPE["seed"]
    )
    test_acc = accuracy(result.model, x_test, y_test)
    log.info("skeleton model trained in %.1fs, synthetic test accuracy %.3f", result.seconds, test_acc)
    meta = ModelMeta(
        class_names=RECIPE["classes"],
        backbone=RECIPE["backbone"],
        input_size=RECIPE["input_size"],
        version=f"skeleton-{digest}",
        args=dict(RECIPE),
        metrics={"synthetic_test_accuracy": test_acc, "train_seconds": result.seconds},
    )
    save_checkpoint(path, result.model, meta)
    return path
