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


def test_backbone_weights_load_from_a_torchvision_state_dict_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")  # the format torchvision publishes
    model = DefectClassifier(num_classes=4, backbone="resnet18")
    model.load_backbone_weights(tmp_path / "resnet18.pth")
    assert torch.equal(model.features[0].weight, reference.conv1.weight)
    assert torch.equal(model.features[4][0].conv1.weight, reference.layer1[0].conv1.weight)


def test_mismatched_weights_file_is_refused(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(RuntimeError):
        DefectClassifier(num_classes=4, backbone="resnet18").load_backbone_weights(tmp_path / "resnet34.pth")


def test_zero_init_residual_starts_every_block_as_identity():
    import torchvision

    net = DefectClassifier(4, "resnet18", zero_init_residual=True)
    blocks = [m for m in net.features.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)]
    assert blocks and all(float(b.bn2.weight.abs().sum()) == 0.0 for b in blocks)
    plain = DefectClassifier(4, "resnet18")
    assert all(float(b.bn2.weight.abs().sum()) > 0 for b in plain.features.modules() if hasattr(b, "bn2"))
    # Init only: the same state-dict layout, so checkpoints load either way.
    assert net.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises(ValueError, match="ResNet backbones only"):
        DefectClassifier(4, "mobilenet_v3_large", zero_init_residual=True)
