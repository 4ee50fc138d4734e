"""A tiny end-to-end train + resume + evaluate on synthetic images (seconds, not minutes)."""

import json

import numpy as np
import pytest

from models import evaluate, synthetic, train
from models.checkpoint import load_checkpoint
from tests.models.commands import stop_with_sigterm

CLASSES = ("ok", "scratch", "pitting", "missing_feature")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert synthetic.write_imagefolder(root, per_class=10, seed=0, size=64, classes=CLASSES) == 40
    return root


def _train_args(data, out, epochs, **extra):
    return train.get_args_parser().parse_args(_argv(data, out, epochs, **extra))


def _argv(data, out, epochs, **extra):
    argv = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--backbone",
        "resnet18",
        "--input-size",
        "32",
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--warmup-epochs",
        "1",
        "--threads",
        "2",
        "--ema-decay",
        "0.9",
        "--mixup-alpha",
        "0.2",
    ]
    return argv + [str(a) for kv in extra.items() for a in kv]


def test_train_resume_evaluate(dataset, tmp_path):
    run = tmp_path / "run"
    first = train.main(_train_args(dataset, run, epochs=1))
    assert first["test"]["samples"] == 8  # 20% of 40
    resumed = train.main(_resume(dataset, run))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert resumed["best_epoch"] in (1, 2)

    _, meta = load_checkpoint(run / "best.pt")
    assert meta.class_names == sorted(CLASSES) and meta.input_size == 32 and meta.backbone == "resnet18"
    assert meta.args["data"] == str(dataset) and meta.args["dataset_fingerprint"] and meta.args["code_version"]
    assert "test_accuracy" in meta.metrics

    report_dir = tmp_path / "report"
    report = evaluate.main(
        evaluate.get_args_parser().parse_args(
            ["--model", str(run), "--data", str(dataset), "--split", "test", "--out", str(report_dir)]
        )
    )
    assert report["accuracy"] == pytest.approx(resumed["test"]["accuracy"])
    for name in ("report.json", "confusion_matrix.json", "confusion_matrix.png", "reliability.png", "summary.md"):
        assert (report_dir / name).stat().st_size > 0
    cm = np.array(json.loads((report_dir / "confusion_matrix.json").read_text())["matrix"])
    assert cm.sum() == 8
    summary = (report_dir / "summary.md").read_text()
    assert "detection rate" in summary and "false-positive rate" in summary


def _resume(data, run, epochs=2):
    args = _train_args(data, run, epochs=epochs)
    args.resume = True
    return args


def test_evaluate_refuses_a_dataset_without_the_runs_images(dataset, tmp_path):
    run = tmp_path / "run"
    train.main(_train_args(dataset, run, epochs=1))
    other = tmp_path / "other"
    synthetic.write_imagefolder(other, per_class=3, seed=99, size=64, classes=CLASSES)
    with pytest.raises(ValueError, match="are not in"):
        evaluate.main(
            evaluate.get_args_parser().parse_args(
                ["--model", str(run), "--data", str(other), "--out", str(tmp_path / "r")]
            )
        )


def test_resume_continues_exactly_like_an_uninterrupted_run(dataset, tmp_path):
    straight = tmp_path / "straight"
    train.main(_train_args(dataset, straight, epochs=2))
    resumed = tmp_path / "resumed"
    train.main(_train_args(dataset, resumed, epochs=1))
    train.main(_resume(dataset, resumed))

    def rows(run):
        return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]

    a, b = rows(straight), rows(resumed)
    assert [r["epoch"] for r in b] == [1, 2]
    for key in ("train_loss", "lr", "val_accuracy"):
        assert a[1][key] == pytest.approx(b[1][key], rel=1e-4), key


def test_resume_reruns_an_epoch_whose_state_was_not_saved_without_a_second_history_row(dataset, tmp_path):
    run = tmp_path / "run"
    train.main(_train_args(dataset, run, epochs=1))
    # As a run stopped after writing epoch 2's history row and before saving its last.pt.
    with open(run / "history.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 9.9}) + "\n")
        f.write('{"epoch": 3, "train_lo')  # and one torn by the stop
    train.main(_resume(dataset, run))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_loss"] != 9.9


def test_sigterm_stops_training_with_143_and_the_run_resumes(dataset, tmp_path):
    run = tmp_path / "run"

    def one_epoch_done(proc):
        for line in proc.stdout:
            if line.startswith("epoch"):  # its last.pt saved or being saved
                return

    stop_with_sigterm("train", _argv(dataset, run, epochs=200), one_epoch_done)
    assert not list(run.glob("*.tmp"))
    done = len((run / "history.jsonl").read_text().splitlines())
    assert 1 <= done < 200
    resumed = train.main(_resume(dataset, run, epochs=done + 1))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, done + 2))
    assert resumed["best_epoch"] <= done + 1
