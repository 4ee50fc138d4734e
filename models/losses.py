"""L = a * CE + (1 - a) * Focal(gamma), with per-class alpha from class frequencies.

Targets may be class indices or probability vectors (mixup/cutmix, label smoothing); both terms handle both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def class_alpha(counts: Sequence[int], method: str = "effective", beta: float = 0.999) -> torch.Tensor:
    """Per-class weights that grow as a class gets rarer, normalised to mean 1.

    ``inverse``: 1 / n_c.  ``effective``: (1 - beta) / (1 - beta^n_c) (Cui et al., 2019), which saturates for
    large classes instead of letting one huge class dominate.  ``uniform``: all ones."""
    n = torch.as_tensor(counts, dtype=torch.float64)
    if (n <= 0).any():
        raise ValueError(f"every class needs at least one training sample, counts={list(counts)}")
    if method == "uniform":
        w = torch.ones_like(n)
    elif method == "inverse":
        w = 1.0 / n
    elif method == "effective":
        w = (1.0 - beta) / (1.0 - torch.pow(beta, n))
    else:
        raise ValueError(f"unknown alpha method {method!r}; use effective, inverse or uniform")
    return (w / w.mean()).float()


def _soft_targets(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    if target.dim() == 1:
        target = F.one_hot(target, num_classes).float()
    if smoothing:
        target = target * (1.0 - smoothing) + smoothing / num_classes
    return target


class FocalLoss(nn.Module):
    """Multi-class focal loss: mean over samples of -sum_c alpha_c * t_c * (1 - p_c)^gamma * log p_c.

    With gamma = 0 and alpha = 1 this is exactly cross-entropy."""

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("alpha", alpha if alpha is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = _soft_targets(target, logits.shape[1], self.label_smoothing)
        log_p = F.log_softmax(logits.float(), dim=1)
        per_sample = (-t * (1.0 - log_p.exp()).pow(self.gamma) * log_p).sum(dim=1)
        if self.alpha is not None:
            # alpha of each sample's *true* class (mixed for mixup), from the unsmoothed target: weighting the
            # smoothing mass by the rare classes' large alpha would pull every prediction toward rare classes.
            per_sample = per_sample * (_soft_targets(target, logits.shape[1], 0.0) * self.alpha).sum(dim=1)
        return per_sample.mean()


class CombinedLoss(nn.Module):
    """``a * CE + (1 - a) * Focal``. CE keeps gradients healthy on easy samples; focal concentrates on the hard
    and rare ones. ``alpha`` weighs the focal term only, so ``a`` trades plain accuracy for rare-class recall."""

    def __init__(
        self, a: float = 0.5, gamma: float = 2.0, alpha: torch.Tensor | None = None, label_smoothing: float = 0.0
    ):
        super().__init__()
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"a must be in [0, 1], got {a}")
        self.a = a
        self.label_smoothing = label_smoothing
        self.focal = FocalLoss(gamma, alpha, label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = _soft_targets(target, logits.shape[1], self.label_smoothing)
        ce = -(t * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
        return self.a * ce + (1.0 - self.a) * self.focal(logits, target)
