"""The demo classifier really learns the synthetic source (so demo verdicts are not noise)."""

import cv2
import numpy as np

from models import synthetic
from models.engines.torch_engine import TorchEngine
from models.preprocess import preprocess_batch
from models.skeleton import RECIPE


def test_synthetic_source_is_deterministic():
    a = [img for _, img in synthetic.generate(4, seed=3, size=64)]
    b = [img for _, img in synthetic.generate(4, seed=3, size=64)]
    c = [img for _, img in synthetic.generate(4, seed=4, size=64)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_skeleton_model_beats_chance_by_far(skeleton_model):
    engine = TorchEngine(skeleton_model, device="cpu")
    # Fresh images (another seed) rendered at the size the skeleton was trained on.
    pairs = list(synthetic.generate(160, seed=12345, size=RECIPE["image_size"], classes=tuple(engine.class_names)))
    batch = preprocess_batch([cv2.cvtColor(img, cv2.COLOR_BGR2RGB) for _, img in pairs], engine.input_size)
    preds = engine.predict(batch).argmax(1)
    acc = np.mean([engine.class_names[p] == label for p, (label, _) in zip(preds, pairs, strict=True)])
    chance = 1 / len(engine.class_names)
    assert acc >= 0.6, f"skeleton model accuracy {acc:.2f} on fresh synthetic images (chance is {chance:.2f})"


def test_skeleton_artifact_drops_artifacts_of_older_quantizers(skeleton_model):
    from models.skeleton import ensure_skeleton_artifact

    stale = skeleton_model.with_name(f"{skeleton_model.stem}-int8-00000000")
    stale.mkdir()
    (stale / "artifact.json").write_text("{}")
    current = ensure_skeleton_artifact(skeleton_model.parent.parent)
    assert (current / "artifact.json").exists() and current.name.startswith(f"{skeleton_model.stem}-int8-")
    assert not stale.exists()
