"""OpenVINO engine: serves the INT8 (NNCF post-training quantized) model of an artifact on CPU.

Chosen by measurement (bench/model_bench.py): on this class of CPU it was the fastest INT8 runtime tried.
"""

from __future__ import annotations

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
    # OpenVINO pins its inference threads to cores by default, chosen from the process's allowed CPUs: the same cores
    # for every process on a node. Two single-thread engines side by side on 2 cores ran at half speed pinned (187 vs
    # 394 frames/s, bench/results/colocated_engines-20261126-145053.json); so would the worker pods of a node without
    # the static CPU manager. Alone, an engine runs as fast unpinned (380 vs 381), single frames ~1 ms slower.
    "ENABLE_CPU_PINNING": False,
}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ServingPlans:
    """A model compiled twice, with a static batch of 1 and with the dynamic batch; calling it sends single images to
    the static plan and batches to the dynamic one, and returns the logits.

    Why: at the frame rates of a line (tens of frames/s) most batches the worker takes hold one frame, and the
    static-shape plan skips the per-call shape handling of the dynamic one: ~5% of the batch-1 latency on the
    ResNet-50 here, nothing measurable at batch 8. Costs a second compiled copy of the weights."""

    def __init__(self, model: Any, config: dict[str, Any], input_size: int) -> None:
        """``model``: an ``ov.Model`` or a model file path."""
        import openvino as ov

        core = ov.Core()
        dynamic = core.read_model(model) if isinstance(model, str | Path) else model
        single = dynamic.clone()
        single.reshape([1, 3, input_size, input_size])
        self._compiled = core.compile_model(dynamic, "CPU", config)
        self._one = core.compile_model(single, "CPU", config).create_infer_request()
        self._many = self._compiled.create_infer_request()
        # The first call of each plan sets up its kernels (tens of ms): pay that here, not on a live batch.
        self._one.infer({0: np.zeros((1, 3, input_size, input_size), dtype=np.float32)})
        self._many.infer({0: np.zeros((2, 3, input_size, input_size), dtype=np.float32)})

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # share_inputs: OpenVINO reads the caller's array in place instead of copying it into its own tensor
        # (2.4 MB at batch 8 here, ~2% of the INT8 batch time); safe because infer() is synchronous and OpenVINO
        # copies anyway when the array is not C-contiguous float32.
        return (self._one if len(batch) == 1 else self._many).infer({0: batch}, share_inputs=True)[0]

    def runtime_property(self, name: str) -> Any:
        """What OpenVINO settled on for the compiled model, e.g. ``"INFERENCE_NUM_THREADS"``."""
        return self._compiled.get_property(name)


class OpenVINOEngine:
    device = "cpu"

    def __init__(
        self, artifact: Path, threads: int | None = None, verify: bool = True, *, cpu_pinning: bool | None = None
    ) -> None:
        """``cpu_pinning`` overrides COMPILE_CONFIG's (off). True restores OpenVINO's default: for a worker with cores
        of its own (DEFECTSTREAM_PIN_INFERENCE_THREADS), and for bench/colocated_engines.py."""
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
        config: dict[str, str | int | bool] = dict(COMPILE_CONFIG)
        if cpu_pinning is not None:
            config["ENABLE_CPU_PINNING"] = cpu_pinning
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._infer = ServingPlans(str(Path(artifact) / MODEL_FILE), config, self.input_size)
        except RuntimeError as exc:
            raise EngineError(f"OpenVINO could not load {artifact / MODEL_FILE}: {exc}") from None

    def runtime_property(self, name: str) -> Any:
        """What OpenVINO settled on for this engine, e.g. ``"ENABLE_CPU_PINNING"``."""
        return self._infer.runtime_property(name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"expected a (N, 3, {self.input_size}, {self.input_size}) batch, got {x.shape}")
        logits = self._infer(x)
        return softmax(np.asarray(logits, dtype=np.float32))
