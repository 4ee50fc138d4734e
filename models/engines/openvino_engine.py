"""OpenVINO engine: serves the INT8 (NNCF post-training quantized) model of an artifact on CPU.

Chosen by measurement (bench/model_bench.py): on this class of CPU it was the fastest INT8 runtime tried.
"""

from __future__ import annotations

from pathlib import Path

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


class OpenVINOEngine:
    device = "cpu"

    def __init__(self, artifact: Path, threads: int | None = None, verify: bool = True):
        try:
            import openvino as ov
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
            self.compiled = ov.Core().compile_model(str(Path(artifact) / MODEL_FILE), "CPU", config)
        except RuntimeError as exc:
            raise EngineError(f"OpenVINO could not load {artifact / MODEL_FILE}: {exc}") from None
        self._request = self.compiled.create_infer_request()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"expected a (N, 3, {self.input_size}, {self.input_size}) batch, got {x.shape}")
        logits = self._request.infer({0: x})[0]
        return softmax(np.asarray(logits, dtype=np.float32))
