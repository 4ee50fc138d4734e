import pytest
import torch

from models.checkpoint import (
    CheckpointError,
    ModelMeta,
    load_checkpoint,
    load_resume_state,
    save_atomically,
    save_checkpoint,
)
from models.engines.torch_engine import TorchEngine, select_device
from models.network import DefectClassifier


def test_round_trip_preserves_outputs_and_meta(tmp_path):
    torch.manual_seed(0)
    model = DefectClassifier(num_classes=3, backbone="resnet18").eval()
    meta = ModelMeta(class_names=["ok", "a", "b"], backbone="resnet18", input_size=32, version="v1", args={"lr": 0.1})
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))
    assert loaded_meta == meta


def test_corrupted_and_foreign_files_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"is not a defectstream\.checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_save_that_fails_midway_leaves_the_previous_file(tmp_path):
    model = DefectClassifier(num_classes=2, backbone="resnet18").eval()
    meta = ModelMeta(class_names=["ok", "bad"], backbone="resnet18", input_size=32, version="v1")
    save_checkpoint(tmp_path / "m.pt", model, meta)
    before = (tmp_path / "m.pt").read_bytes()
    # The tensor is written before pickling reaches the lambda: a plain torch.save would leave a torn file here.
    with pytest.raises(Exception, match="pickle"):
        save_atomically({"state_dict": model.state_dict(), "hook": lambda: None}, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "m.pt")[1].version == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_resume_state_is_refused_clearly_when_torn_or_foreign(tmp_path):
    state = {"model": {"w": torch.zeros(64, 64)}, "epoch": 3}
    save_atomically(state, tmp_path / "last.pt")
    assert load_resume_state(tmp_path / "last.pt")["epoch"] == 3
    blob = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"not a loadable resume state.*restart the run"):
        load_resume_state(tmp_path / "torn.pt")
    save_atomically({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a training run's resume state"):
        load_resume_state(tmp_path / "other.pt")


def test_engine_predicts_probabilities(tmp_path):
    model = DefectClassifier(num_classes=2, backbone="resnet18").eval()
    save_checkpoint(tmp_path / "m.pt", model, ModelMeta(class_names=["ok", "bad"], backbone="resnet18", input_size=32))
    engine = TorchEngine(tmp_path / "m.pt", device="cpu")
    probs = engine.predict(torch.rand(4, 3, 32, 32).numpy())
    assert probs.shape == (4, 2)
    assert probs.sum(axis=1) == pytest.approx([1.0] * 4, abs=1e-5)


def test_device_selection_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert select_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        select_device("cuda")
