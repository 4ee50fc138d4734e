import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import CombinedLoss, FocalLoss, class_alpha


def test_focal_with_gamma_zero_and_uniform_alpha_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    ce = F.cross_entropy(logits, target)
    assert FocalLoss(gamma=0.0)(logits, target) == pytest.approx(ce.item(), rel=1e-6)
    assert FocalLoss(gamma=0.0, alpha=class_alpha([3, 3, 3, 3, 3]))(logits, target) == pytest.approx(
        ce.item(), rel=1e-6
    )
    assert CombinedLoss(a=0.3, gamma=0.0)(logits, target) == pytest.approx(ce.item(), rel=1e-6)


def test_focal_matches_hand_computation():
    # Two classes, logits (0, ln 3): p = (0.25, 0.75). Target class 1, gamma 2, alpha (1, 2):
    # loss = -alpha_1 * (1 - 0.75)^2 * ln 0.75
    logits = torch.tensor([[0.0, math.log(3.0)]])
    loss = FocalLoss(gamma=2.0, alpha=torch.tensor([1.0, 2.0]))(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx(-2.0 * 0.25**2 * math.log(0.75), rel=1e-6)


def test_combined_is_the_weighted_sum():
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 0.0]])
    target = torch.tensor([1, 0])
    ce = F.cross_entropy(logits, target).item()
    p0 = math.exp(1) / (math.exp(1) + 1)
    focal = (-(0.25**2) * math.log(0.75) - (1 - p0) ** 2 * math.log(p0)) / 2
    assert CombinedLoss(a=0.25, gamma=2.0)(logits, target).item() == pytest.approx(0.25 * ce + 0.75 * focal, rel=1e-6)


def test_soft_targets_equal_hard_targets_when_one_hot():
    logits, target = torch.randn(8, 4), torch.randint(0, 4, (8,))
    loss = CombinedLoss(a=0.5, gamma=2.0)
    assert loss(logits, F.one_hot(target, 4).float()).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)


def test_alpha_weights_rare_classes_more():
    for method in ("inverse", "effective"):
        alpha = class_alpha([400, 100, 10], method)
        assert alpha[2] > alpha[1] > alpha[0]
        assert alpha.mean().item() == pytest.approx(1.0)
    assert torch.allclose(class_alpha([1, 2, 3], "inverse"), torch.tensor([1.0, 0.5, 1 / 3]) / (11 / 18))
    with pytest.raises(ValueError, match="at least one"):
        class_alpha([5, 0])
