"""Every engine this machine has gives FP32's top-1; bad artifacts are refused; GPU selection never crashes."""

import json
import shutil
import time

import numpy as np
import pytest
import torch

from models import data as ds
from models import quantize
from models.engines import EngineError, cuda_status, load_engine
from models.engines.torch_engine import TorchEngine
from tests.models.commands import stop_with_sigterm


@pytest.fixture(scope="module")
def artifact(small_run, tmp_path_factory):
    run, data = small_run
    out = tmp_path_factory.mktemp("artifact") / "int8"
    args = quantize.get_args_parser().parse_args(
        [
            "--model",
            str(run),
            "--calib",
            str(data),
            "--out",
            str(out),
            "--calib-size",
            "64",
            "--min-agreement",
            "0.9",
            "--max-drop",
            "0.05",
            "--threads",
            "2",
        ]
    )
    quantize.main(args)
    return out


def _test_batch(run, data):
    split = ds.load_split(run / "split.json")["test"]
    engine = TorchEngine(run / "best.pt", device="cpu")
    dataset = ds.ImageDataset(split, engine.class_names, engine.input_size)
    return np.stack([dataset[i][0].numpy() for i in range(len(dataset))]), engine


def test_every_available_engine_agrees_with_fp32(small_run, artifact):
    """Same top-1 as FP32 on every image FP32 decides with a margin; a near-tie (top-2 within 0.1) may flip under
    INT8 rounding, which is why the product guard measures agreement on a real held-out split."""
    run, data = small_run
    x, fp32 = _test_batch(run, data)
    p32 = fp32.predict(x)
    reference = p32.argmax(1)
    top2 = np.sort(p32, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] >= 0.1
    assert decisive.mean() >= 0.8, "the small model is too unsure to compare engines on"
    kinds = ["openvino-int8", "torch-fp32", "torch-bf16"]
    if cuda_status()[0]:
        kinds.append("torch-fp16")
    for kind in kinds:
        engine = load_engine(artifact, kind=kind)
        probs = engine.predict(x)
        assert probs.shape == (len(x), len(engine.class_names))
        assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
        same = probs.argmax(1) == reference
        assert same[decisive].all(), f"{kind}: top-1 differs from FP32 on {(~same[decisive]).sum()} decisive images"
        assert same.mean() >= 0.95, f"{kind}: top-1 agreement {same.mean():.3f} with FP32"


def test_int8_engine_gives_the_same_answer_one_image_at_a_time(small_run, artifact):
    """Single images go through a static-shape plan, batches through the dynamic one: same model, same answers."""
    x, _ = _test_batch(*small_run)
    engine = load_engine(artifact, kind="openvino-int8")
    batched = engine.predict(x)
    single = np.concatenate([engine.predict(x[i : i + 1]) for i in range(len(x))])
    assert np.abs(batched - single).max() < 1e-2
    assert (batched.argmax(1) == single.argmax(1)).mean() >= 0.98


def test_int8_engine_leaves_its_threads_free_to_run_on_any_allowed_core(artifact):
    """OpenVINO's default pins its threads, picking the same cores in every process of a node (see COMPILE_CONFIG)."""
    engine = load_engine(artifact, kind="openvino-int8", threads=2)
    assert engine.runtime_property("ENABLE_CPU_PINNING") is False
    assert engine.runtime_property("INFERENCE_NUM_THREADS") == 2
    pinned = load_engine(artifact, kind="openvino-int8", threads=2, cpu_pinning=True)  # a worker with its own cores
    assert pinned.runtime_property("ENABLE_CPU_PINNING") is True


def test_colocated_engines_bench_runs_and_reports_both_pinning_modes(artifact, tmp_path):
    """The benchmark script works end to end (its numbers are only meaningful on a quiet machine)."""
    from bench import colocated_engines

    args = colocated_engines.get_args_parser().parse_args(
        [
            *("--model", str(artifact), "--seconds", "0.2", "--batch", "2"),
            *("--frames", "5", "--gap-ms", "1", "--rounds", "1", "--out", str(tmp_path)),
        ]
    )
    result = colocated_engines.main(args)
    layouts = [(r["processes"], r["threads_each"], r["cpu_pinning"]) for r in result["rows"]]
    assert layouts == [(2, 1, True), (2, 1, False), (1, 2, True), (1, 2, False)]
    # Each process reports what OpenVINO really ran with, so a layout cannot silently measure the other mode.
    for row in result["rows"]:
        assert row["runtime_cpu_pinning_each"] == [row["cpu_pinning"]] * row["processes"]
        if not row["cpu_pinning"]:
            assert row["threads_held_to_each"] == [[]] * row["processes"]
    single = result["single_frames"]["runs"]
    assert [(r["threads"], r["cpu_pinning"], r["runtime_cpu_pinning"]) for r in single] == [
        (2, True, True),
        (2, False, False),
    ]
    assert list(tmp_path.glob("colocated_engines-*.json"))


def test_colocated_engines_bench_fails_fast_when_an_engine_process_dies(tmp_path):
    from bench import colocated_engines

    args = colocated_engines.get_args_parser().parse_args(["--model", str(tmp_path / "missing"), "--seconds", "0.1"])
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with"):
        colocated_engines.run_layout(args, processes=2, threads=1, pinning=False)
    assert time.monotonic() - started < 120  # not the 5-minute stuck-child timeout


def test_artifact_records_the_guard_numbers(artifact):
    meta = json.loads((artifact / "artifact.json").read_text())
    assert meta["engine"] == "openvino-int8"
    assert meta["accuracy"]["top1_agreement"] >= 0.9
    assert {"fp32_accuracy", "int8_accuracy", "split", "fingerprint"} <= meta["accuracy"].keys()
    assert meta["accuracy"]["top1_agreement"] == min(
        meta["accuracy"]["top1_agreement_batched"], meta["accuracy"]["top1_agreement_single"]
    )
    low, high = meta["calibration"]["input_range"]
    assert low <= quantize.pixel_value_range(meta["mean"], meta["std"])[0] and high >= 2.6
    assert meta["calibration"]["split"] == "train" and meta["calibration"]["images"] == 64
    assert len(meta["source_checkpoint_sha256"]) == 64


def test_auto_engine_is_int8_on_a_cpu_machine(artifact, small_run):
    if cuda_status()[0]:
        pytest.skip("this machine has CUDA: auto picks the GPU engine")
    assert load_engine(artifact).name == "openvino-int8"
    assert load_engine(small_run[0] / "best.pt").name == "torch-fp32"


def test_corrupted_artifact_is_refused(artifact, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    with open(broken / "model.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\xff" * 8)
    with pytest.raises(EngineError, match=r"model.bin does not match"):
        load_engine(broken)
    (broken / "model.bin").unlink()
    with pytest.raises(EngineError, match=r"model.bin is missing"):
        load_engine(broken)


def test_mismatched_artifact_is_refused(artifact, small_run, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(artifact, mixed)
    shutil.copy(small_run[0] / "last.pt", mixed / "checkpoint.pt")  # another file under the expected name
    with pytest.raises(EngineError, match=r"checkpoint.pt does not match"):
        load_engine(mixed, kind="torch-fp32")
    with pytest.raises(EngineError, match=r"directory without artifact.json"):
        load_engine(tmp_path)
    with pytest.raises(EngineError, match="INT8 needs an artifact"):
        load_engine(small_run[0] / "best.pt", kind="openvino-int8")


def test_guard_refuses_and_writes_nothing(small_run, tmp_path):
    run, data = small_run
    out = tmp_path / "refused"
    args = quantize.get_args_parser().parse_args(
        ["--model", str(run), "--calib", str(data), "--out", str(out), "--calib-size", "16", "--min-agreement", "1.01"]
    )
    with pytest.raises(quantize.QuantizationRefused, match="no artifact written"):
        quantize.main(args)
    assert not out.exists()
    assert not list(tmp_path.glob(".refused-*"))


# Into OpenVINO's model conversion, where an exception raised by a signal handler aborted the process (134) or was
# lost (0): measured at 0.6-1.5 s before ExitOnStopSignals.
@pytest.mark.parametrize("delay_s", [0.6, 1.0, 1.5])
def test_sigterm_stops_quantize_with_143_and_no_half_built_artifact(small_run, tmp_path, delay_s):
    run, data = small_run
    out = tmp_path / "stopped"
    args = ["--model", str(run), "--calib", str(data), "--out", str(out), "--calib-size", "64"]
    args += ["--min-agreement", "0", "--max-drop", "1", "--threads", "2"]

    def building(proc):
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".stopped-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(tmp_path.glob(".stopped-*")), "quantize never started building its artifact"
        time.sleep(delay_s)

    stop_with_sigterm("quantize", args, building)
    assert not out.exists()
    assert not list(tmp_path.glob(".stopped-*"))


def test_gpu_selection_without_a_gpu_reports_instead_of_crashing(small_run):
    available, why = cuda_status()
    if available:
        pytest.skip("this machine has CUDA")
    assert "CUDA" in why
    with pytest.raises(EngineError, match="CUDA is not available"):
        load_engine(small_run[0] / "best.pt", kind="torch-fp16", device="cuda")
    with pytest.raises(EngineError, match="fp16 inference is for CUDA"):
        TorchEngine(small_run[0] / "best.pt", device="cpu", precision="fp16")
    assert torch.cuda.is_available() is False


def test_model_bench_runs_and_reports_ratios(artifact, small_run, tmp_path):
    """The benchmark script works end to end (its numbers are only meaningful on a quiet machine)."""
    from bench import model_bench

    run, data = small_run
    args = model_bench.get_args_parser().parse_args(
        [
            "--model",
            str(artifact),
            "--seconds",
            "0.05",
            "--min-iters",
            "2",
            "--batch-sizes",
            "1,8",
            "--engines",
            "torch-fp32,openvino-int8",
            "--data",
            str(data),
            "--run",
            str(run),
            "--out",
            str(tmp_path),
        ]
    )
    result = model_bench.main(args)
    assert {r["engine"] for r in result["rows"]} == {"torch-fp32", "openvino-int8"}
    assert result["ratios"]["fastest_true_fp32"] == "torch-fp32"
    assert result["ratios"]["int8_bs1_p50_over_fp32"] > 0
    assert {d["frame"] for d in result["decode"]} == {"640x480", "1280x1024"}
    assert result["reduced_decode_effect"]["images"] > 0
    assert list(tmp_path.glob("model_bench-*.json"))


def test_fp32_parts_name_the_right_ops_and_refuse_unknown_parts():
    import openvino as ov

    from models.network import DefectClassifier

    ov_model = ov.convert_model(DefectClassifier(3, "resnet18").eval(), example_input=torch.zeros(1, 3, 64, 64))
    convs = [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert quantize._fp32_op_names(ov_model, ()) == []
    assert quantize._fp32_op_names(ov_model, ("stem",)) == [convs[0]]
    head = quantize._fp32_op_names(ov_model, ("head",))
    assert len(head) >= 2 and all("__module.head" in n for n in head)
    assert all("__module.attention" in n for n in quantize._fp32_op_names(ov_model, ("attention",)))
    with pytest.raises(ValueError, match="unknown FP32 parts"):
        quantize._fp32_op_names(ov_model, ("backbone",))


def _input_quantizer_range(ov_model) -> tuple[float, float] | None:
    (parameter,) = ov_model.get_parameters()
    for target in parameter.output(0).get_target_inputs():
        fq = target.get_node()
        if fq.get_type_name() == "FakeQuantize":
            return tuple(float(fq.input_value(i).get_node().get_data().ravel()[0]) for i in (1, 2))
    return None


@pytest.mark.parametrize("preset", ["performance", "mixed"])
def test_input_quantizer_spans_every_pixel_value_whatever_calibration_saw(preset):
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    # Calibration sees mid-grey images only (pixels 100..150): calibrated ranges alone would clip black and white.
    rng = np.random.default_rng(0)
    pixels = rng.integers(100, 151, size=(16, 32, 32, 3)).astype(np.float32) / 255.0
    normalized = ((pixels - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)).transpose(0, 3, 1, 2)
    calibration = [np.ascontiguousarray(x[None]) for x in normalized]
    quantized, _, pinned = quantize.quantize_openvino(model, calibration, 32, normalization=(mean, std), preset=preset)
    low, high = _input_quantizer_range(quantized)
    assert (low, high) == pytest.approx(pinned)
    lo, hi = quantize.pixel_value_range(mean, std)
    assert low <= lo + 1e-6 and high >= hi - 1e-6, (low, high, lo, hi)
    zero_point = -low / ((high - low) / 255)  # zero must sit on the grid: padding and ReLU zeros stay exact
    assert zero_point == pytest.approx(round(zero_point), abs=1e-3)
    if preset == "performance":
        assert round(zero_point) == 128

    stem_fp32, _, none = quantize.quantize_openvino(
        model, calibration, 32, normalization=(mean, std), fp32_parts=("stem",)
    )
    assert none is None and _input_quantizer_range(stem_fp32) is None


@pytest.mark.parametrize(("lo", "hi"), [(-2.1179, 2.64), (-0.3, 5.0), (-4.0, 0.2), (0.0, 3.0)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_input_quantizer_range_covers_the_values_with_zero_on_the_grid(lo, hi, symmetric):
    low, high = quantize.input_quantizer_range(lo, hi, 256, symmetric)
    assert low <= lo and high >= hi
    step = (high - low) / 255
    assert -low / step == pytest.approx(round(-low / step), abs=1e-6)
    assert high - low <= 2.02 * max(-lo, hi) if symmetric else high - low <= (hi - lo) * 1.02 + 1e-9


def test_int8_variants_bench_scores_each_variant_on_val_and_test(small_run, tmp_path):
    from bench import int8_variants

    run, data = small_run
    args = int8_variants.get_args_parser().parse_args(
        [
            *("--run", str(run), "--data", str(data), "--out", str(tmp_path)),
            *("--variants", "default,fp32-stem-attention-head", "--threads", "2"),
        ]
    )
    result = int8_variants.main(args)
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"default", "fp32-stem-attention-head"}
    assert rows["default"]["fp32_ops"] == 0 and rows["fp32-stem-attention-head"]["fp32_ops"] > 0
    for r in rows.values():
        for split in ("val", "test"):
            assert 0.0 <= r[f"{split}_agreement"] <= 1.0
            assert r[f"{split}_agreement"] == 1 - r[f"{split}_flips"] / len(ds.load_split(run / "split.json")[split])
    assert len(list(tmp_path.glob("int8_variants-*.json"))) == 1


def test_int8_engine_with_two_streams_infers_two_batches_at_once_with_the_same_answers(small_run, artifact):
    from concurrent.futures import ThreadPoolExecutor

    x, _ = _test_batch(*small_run)
    one = load_engine(artifact, kind="openvino-int8", threads=2, streams=1)
    two = load_engine(artifact, kind="openvino-int8", threads=2, streams=2)
    assert (one.concurrent_batches, two.concurrent_batches) == (1, 2)
    assert two.runtime_property("NUM_STREAMS") == 2
    halves = [x[: len(x) // 2], x[len(x) // 2 :], x[:1], x[1:2]]  # batches and single images, side by side
    with ThreadPoolExecutor(max_workers=4) as pool:  # more callers than streams: the others wait for a free one
        together = list(pool.map(two.predict, halves * 3))
    for batch, probs in zip(halves * 3, together, strict=True):
        assert np.abs(probs - one.predict(batch)).max() < 1e-2
    assert two._infer._free.qsize() == 2  # every request came back to the pool
    capped = load_engine(artifact, kind="openvino-int8", threads=1, streams=2)
    assert capped.concurrent_batches == 1
    with pytest.raises(EngineError, match="streams must be at least 1"):
        load_engine(artifact, kind="openvino-int8", streams=0)
