"""The pure torch defect classifier: torchvision backbone + spatial attention + classification head.

No training code here (see :mod:`models.train`), and no I/O beyond loading a state dict the user names.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

BACKBONES = ("resnet50", "resnet18", "resnet34", "mobilenet_v3_large", "efficientnet_b0")


class SpatialAttention(nn.Module):
    """CBAM-style spatial attention: a 7x7 conv over [channel-mean, channel-max] gives a sigmoid mask
    that re-weights every location of the feature map, so small defects are not averaged away by pooling."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


def _backbone(name: str, zero_init_residual: bool = False) -> tuple[nn.Module, int]:
    """Feature extractor (ends with the last conv feature map) and its channel count."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if zero_init_residual and not name.startswith("resnet"):
        raise ValueError(f"zero_init_residual applies to ResNet backbones only, not {name}")
    # Zero-initialising the last BN of each residual block starts every block as identity, which makes a
    # from-scratch ResNet-50 train like a shallower net early on (Goyal et al. 2017); init only, same weights layout.
    extra = {"zero_init_residual": True} if zero_init_residual else {}
    net = getattr(torchvision.models, name)(weights=None, **extra)
    if name.startswith("resnet"):
        features = nn.Sequential(*list(net.children())[:-2])
        channels = net.fc.in_features
    else:
        features = net.features
        channels = net.classifier[0].in_features
    return features, channels


class DefectClassifier(nn.Module):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        dropout: float = 0.3,
        hidden: int = 512,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.backbone_name = backbone
        self.features, channels = _backbone(backbone, zero_init_residual)
        self.attention = SpatialAttention()
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.features(x)))

    def load_backbone_weights(self, path: Path) -> None:
        """Load a torchvision state dict (e.g. ImageNet weights the user downloaded) into the backbone.

        The classifier layer of the torchvision model is ignored: its class count is ImageNet's."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        reference = getattr(torchvision.models, self.backbone_name)(weights=None)
        reference.load_state_dict(state)
        source = (
            nn.Sequential(*list(reference.children())[:-2])
            if self.backbone_name.startswith("resnet")
            else reference.features
        )
        self.features.load_state_dict(source.state_dict())
