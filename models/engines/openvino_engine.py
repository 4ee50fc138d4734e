"""OpenVINO engine: serves the INT8 (NNCF post-training quantized) model of an artifact on CPU.

Chosen by measurement (bench/model_bench.py): on this class of CPU it was the fastest INT8 runtime tried.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.engines.artifact import read_meta
from models.engines.base import EngineError

MODEL_FILE = "model.xml"
COMPILE_CONFIG = {
    # Without this hint OpenVINO runs non-quantized layers in BF16 on CPUs that support it, which makes
    # its numbers differ from the FP32 reference the accuracy guard measured against.
    "INFERENCE_PRECISION_HINT": "f32",
    "PERFORMANCE_HINT": "LATENCY",
}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def compile_for_serving(model: Any, config: dict[str, Any], input_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """Compile ``model`` (an ``ov.Model`` or a model file path) twice: with a static batch of 1 and with the
    dynamic batch; returns ``infer(batch) -> logits`` that sends single images to the static one.

    Why: at the frame rates of a line (tens of frames/s) most batches the worker takes hold one frame, and the
    static-shape plan skips the per-call shape handling of the dynamic one: ~5% of the batch-1 latency on the
    ResNet-50 here, nothing measurable at batch 8. Costs a second compiled copy of the weights."""
    import openvino as ov

    core = ov.Core()
    dynamic = core.read_model(model) if isinstance(model, str | Path) else model
    single = dynamic.clone()
    single.reshape([1, 3, input_size, input_size])
    one = core.compile_model(single, "CPU", config).create_infer_request()
    many = core.compile_model(dynamic, "CPU", config).create_infer_request()
    # The first call of each plan sets up its kernels (tens of ms): pay that here, not on a live batch.
    one.infer({0: np.zeros((1, 3, input_size, input_size), dtype=np.float32)})
    many.infer({0: np.zeros((2, 3, input_size, input_size), dtype=np.float32)})

    def infer(batch: np.ndarray) -> np.ndarray:
        # share_inputs: OpenVINO reads the caller's array in place instead of copying it into its own tensor
        # (2.4 MB at batch 8 here, ~2% of the INT8 batch time); safe because infer() is synchronous and OpenVINO
        # copies anyway when the array is not C-contiguous float32.
        return (one if len(batch) == 1 else many).infer({0: batch}, share_inputs=True)[0]

    return infer


class OpenVINOEngine:
    device = "cpu"

    def __init__(self, artifact: Path, threads: int | None = None, verify: bool = True):
        try:
            import openvino  # noqa: F401 - a clear error here, before the artifact is read
        except ImportError as exc:  # pragma: no cover - openvino is a dependency
            raise EngineError(f"OpenVINO runtime is not installed: {exc}") from None
        meta = read_meta(artifact, verify=verify)
        if not meta.engine.startswith("openvino"):
            raise EngineError(f"artifact {artifact} is for engine {meta.engine!r}, not OpenVINO")
        self.name = meta.engine
        self.precision = meta.engine.rsplit("-", 1)[-1]
        self.class_names = list(meta.class_names)
        self.input_size = meta.input_size
        self.mean, self.std = list(meta.mean), list(meta.std)
        self.version = meta.version
        self.model_name = meta.backbone
        self.meta = meta
        config: dict[str, str | int] = dict(COMPILE_CONFIG)
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._infer = compile_for_serving(str(Path(artifact) / MODEL_FILE), config, self.input_size)
        except RuntimeError as exc:
            raise EngineError(f"OpenVINO could not load {artifact / MODEL_FILE}: {exc}") from None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"expected a (N, 3, {self.input_size}, {self.input_size}) batch, got {x.shape}")
        logits = self._infer(x)
        return softmax(np.asarray(logits, dtype=np.float32))
