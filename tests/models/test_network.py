import pytest
import torch

from models.network import BACKBONES, DefectClassifier, SpatialAttention


def test_spatial_attention_keeps_shape_and_only_rescales():
    att = SpatialAttention()
    x = torch.rand(2, 16, 9, 11)
    y = att(x)
    assert y.shape == x.shape
    ratio = y / x
    # The mask is one value per location, shared by all channels, in (0, 1).
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)
    assert (ratio > 0).all() and (ratio < 1).all()


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_classifier_output_shape(backbone):
    model = DefectClassifier(num_classes=5, backbone=backbone).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 3, 64, 64)).shape == (3, 5)


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        DefectClassifier(num_classes=2, backbone="vgg11")
    assert "resnet50" in BACKBONES
