"""Training loop for :class:`models.network.DefectClassifier` on in-memory preprocessed batches."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.network import DefectClassifier

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: DefectClassifier
    train_loss: float
    seconds: float


def train_classifier(
    x: np.ndarray,
    y: Sequence[int],
    num_classes: int,
    *,
    backbone: str = "resnet18",
    epochs: int = 8,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> TrainResult:
    """Train from random init on a preprocessed float32 NCHW array ``x`` with integer labels ``y``.

    Augmentation is horizontal/vertical flips only: enough for the synthetic source this serves."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DefectClassifier(num_classes=num_classes, backbone=backbone)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, int(np.ceil(len(x) / batch_size)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    started = time.perf_counter()
    model.train()
    mean_loss = float("nan")
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            xb = x[idx]
            if rng.random() < 0.5:
                xb = xb[:, :, :, ::-1]
            if rng.random() < 0.5:
                xb = xb[:, :, ::-1, :]
            logits = model(torch.from_numpy(np.ascontiguousarray(xb)))
            loss = loss_fn(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        mean_loss = float(np.mean(losses))
        log.info("epoch %d/%d loss %.4f", epoch + 1, epochs, mean_loss)
    model.eval()
    return TrainResult(model=model, train_loss=mean_loss, seconds=time.perf_counter() - started)


@torch.inference_mode()
def accuracy(model: nn.Module, x: np.ndarray, y: Sequence[int], batch_size: int = 64) -> float:
    model.eval()
    preds = [model(torch.from_numpy(x[i : i + batch_size])).argmax(1).numpy() for i in range(0, len(x), batch_size)]
    return float((np.concatenate(preds) == np.asarray(y)).mean())
