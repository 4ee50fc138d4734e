"""A small classifier trained in about two minutes on the synthetic source, for the demo and the pipeline tests.

It goes through the real training script (models/train.py) and exercises the real model code path (network,
preprocessing, checkpoint, engine); its accuracy on synthetic images says nothing about real parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from models import synthetic, train

log = logging.getLogger(__name__)

RECIPE = {
    "classes": list(synthetic.CLASSES),  # all 16: the demo's camera shows every class
    "per_class": 60,
    "image_size": 128,
    "seed": 0,
    "generator_version": synthetic.GENERATOR_VERSION,
    "train_args": [
        "--backbone",
        "resnet18",
        "--input-size",
        "64",
        "--epochs",
        "30",
        "--batch-size",
        "32",
        "--lr",
        "3e-3",
        "--warmup-epochs",
        "1",
        "--augment",
        "light",
        "--label-smoothing",
        "0",
        "--loss-a",
        "1",
        "--split",
        "0.8,0.1,0.1",
    ],
}


_CODE = ("train", "network", "losses", "data", "preprocess", "checkpoint", "synthetic")


def _digest() -> str:
    # The cache key covers the training code too: a changed train.py / network.py must retrain, not reuse.
    sources = b"".join((Path(__file__).parent / f"{m}.py").read_bytes() for m in _CODE)
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode() + sources).hexdigest()[:12]


def ensure_skeleton_model(cache_dir: Path) -> Path:
    """Path to the cached skeleton checkpoint, training it first (about 2 min on 2 cores) if missing."""
    digest = _digest()
    path = Path(cache_dir) / "models" / f"skeleton-{digest}.pt"
    if path.exists():
        return path
    with tempfile.TemporaryDirectory(prefix="skeleton-") as tmp:
        data, run = Path(tmp) / "data", Path(tmp) / f"skeleton-{digest}"
        classes = tuple(RECIPE["classes"])
        synthetic.write_imagefolder(data, RECIPE["per_class"], RECIPE["seed"], RECIPE["image_size"], classes)
        args = train.get_args_parser().parse_args(
            ["--data", str(data), "--out", str(run), "--seed", str(RECIPE["seed"]), *RECIPE["train_args"]]
        )
        metrics = train.main(args)
        log.info("skeleton model: synthetic test accuracy %.3f", metrics["test"]["accuracy"])
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / "best.pt", path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return path


# The demo model is a 16-class toy (87% right on fresh synthetic parts at its 128 px, 76% at the camera's 192 px)
# whose held-out split is 96 images: one flip there is 1 point of agreement, and the toy has many near-ties (top-2
# margins under 0.35) that INT8 noise flips either way. Across the recipes tried on generator v4 its INT8 copy
# agreed on 93-96% of those images (INT8 accuracy from 5 points below to 2 above FP32), so it is held to this
# looser guard; the product default (quantize's --min-agreement 0.995 / --max-drop 0.005) is for models that earn
# a place on a line.
DEMO_GUARD = {"min_agreement": 0.93, "max_drop": 0.05}
# How the skeleton is quantized. Full bias correction because the same recipe trains a slightly different toy on
# another CPU: on an Intel Sapphire Rapids machine (2026-11-27) fast bias correction gave 92.7% agreement (refused),
# full 96.9%, at the same INT8 accuracy (86.5% against 88.5% FP32), and the earlier AMD EPYC gave 95.8% with fast.
QUANTIZE_ARGS = (
    "--calib-size",
    "200",
    "--bias-correction",
    "full",
    "--min-agreement",
    str(DEMO_GUARD["min_agreement"]),
    "--max-drop",
    str(DEMO_GUARD["max_drop"]),
)


def ensure_skeleton_artifact(cache_dir: Path) -> Path:
    """The skeleton quantized to OpenVINO INT8 by ``defectstream quantize`` under :data:`DEMO_GUARD`, cached next
    to the checkpoint. Raises :class:`models.quantize.QuantizationRefused` if even that guard refuses it."""
    from models import data as ds
    from models import quantize

    checkpoint = ensure_skeleton_model(cache_dir)
    # Keyed by the quantization code and arguments as well: a fixed quantizer must not be hidden behind an artifact
    # it built.
    quantizer = hashlib.sha256(
        (Path(__file__).parent / "quantize.py").read_bytes() + json.dumps(QUANTIZE_ARGS).encode()
    ).hexdigest()[:8]
    out = checkpoint.with_name(f"{checkpoint.stem}-int8-{quantizer}")
    # Artifacts this checkpoint got from earlier quantizer versions are never read again.
    for stale in out.parent.glob(f"{checkpoint.stem}-int8*"):
        if stale.is_dir() and stale.name not in (out.name, out.name + ".partial"):
            shutil.rmtree(stale, ignore_errors=True)
    if (out / "artifact.json").exists():
        return out
    with tempfile.TemporaryDirectory(prefix="skeleton-int8-") as tmp:
        data, run = Path(tmp) / "data", Path(tmp) / "run"
        classes = tuple(RECIPE["classes"])
        synthetic.write_imagefolder(data, RECIPE["per_class"], RECIPE["seed"], RECIPE["image_size"], classes)
        # The training split, recomputed: it is a deterministic function of the images and the seed.
        fractions = RECIPE["train_args"][RECIPE["train_args"].index("--split") + 1]
        records, _ = ds.dedupe(ds.discover(data))
        splits = ds.stratified_split(records, tuple(float(f) for f in fractions.split(",")), seed=RECIPE["seed"])
        run.mkdir()
        ds.save_split(run / "split.json", splits)
        shutil.copy2(checkpoint, run / "best.pt")
        staging = Path(tmp) / "artifact"
        quantize.main(
            quantize.get_args_parser().parse_args(
                ["--model", str(run), "--calib", str(data), "--out", str(staging), *QUANTIZE_ARGS]
            )
        )
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(staging, partial)
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)  # a crash mid-copy leaves .partial, never a half artifact under the real name
    return out
