"""A small classifier trained in seconds on the synthetic source, for the demo and the pipeline tests.

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
    "classes": ["ok", "scratch", "pitting", "crack"],
    "per_class": 125,
    "image_size": 192,
    "seed": 0,
    "generator_version": synthetic.GENERATOR_VERSION,
    "train_args": [
        "--backbone",
        "resnet18",
        "--input-size",
        "64",
        "--epochs",
        "12",
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


def ensure_skeleton_model(cache_dir: Path) -> Path:
    """Path to the cached skeleton checkpoint, training it first (about 20 s on 2 cores) if missing."""
    # The cache key covers the training code too: a changed train.py / network.py must retrain, not reuse.
    sources = b"".join((Path(__file__).parent / f"{m}.py").read_bytes() for m in _CODE)
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode() + sources).hexdigest()[:12]
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
