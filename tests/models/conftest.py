import pytest

from models import synthetic, train

# Classes that stay distinct at 48 px, so a few seconds of training give a confident model.
SMALL_CLASSES = ("ok", "corrosion", "chip", "missing_feature")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A small classifier trained in seconds on synthetic images: (run dir, dataset dir)."""
    data = tmp_path_factory.mktemp("small-data")
    synthetic.write_imagefolder(data, per_class=60, seed=5, size=48, classes=SMALL_CLASSES)
    run = tmp_path_factory.mktemp("small-run")
    args = train.get_args_parser().parse_args(
        [
            "--data",
            str(data),
            "--out",
            str(run),
            "--backbone",
            "resnet18",
            "--input-size",
            "48",
            "--epochs",
            "20",
            "--batch-size",
            "16",
            "--warmup-epochs",
            "1",
            "--threads",
            "2",
            "--augment",
            "light",
            "--lr",
            "3e-3",
            "--label-smoothing",
            "0",
            "--loss-a",
            "1",
        ]
    )
    metrics = train.main(args)
    assert metrics["test"]["accuracy"] >= 0.8, f"the small model did not learn: {metrics['test']['accuracy']}"
    return run, data
