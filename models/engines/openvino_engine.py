"""OpenVINO engine: serves the INT8 (NNCF post-training quantized) model of an artifact on CPU.

Chosen by measurement (bench/model_bench.py): on this class of CPU it was the fastest INT8 runtime tried.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any

import numpy as np

from models.engines.artifact import read_meta
from models.engines.base import EngineError

log = logging.getLogger(__name__)

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
    ResNet-50 here, nothing measurable at batch 8. Costs a second compiled copy of the weights.

    ``requests``: how many calls may run at once (one infer request per plan each; a call waits for a free pair).
    Worth more than 1 only with as many OpenVINO streams (``NUM_STREAMS`` in ``config``)."""

    def __init__(self, model: Any, config: dict[str, Any], input_size: int, requests: int = 1) -> None:
        """``model``: an ``ov.Model`` or a model file path."""
        import openvino as ov

        if requests < 1:
            raise ValueError(f"requests must be at least 1, got {requests}")
        core = ov.Core()
        dynamic = core.read_model(model) if isinstance(model, str | Path) else model
        single = dynamic.clone()
        single.reshape([1, 3, input_size, input_size])
        self._compiled = core.compile_model(dynamic, "CPU", config)
        one = core.compile_model(single, "CPU", config)
        self._free: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        for _ in range(requests):
            pair = (one.create_infer_request(), self._compiled.create_infer_request())
            # The first call of each plan sets up its kernels (tens of ms): pay that here, not on a live batch.
            pair[0].infer({0: np.zeros((1, 3, input_size, input_size), dtype=np.float32)})
            pair[1].infer({0: np.zeros((2, 3, input_size, input_size), dtype=np.float32)})
            self._free.put(pair)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        pair = self._free.get()
        try:
            # share_inputs: OpenVINO reads the caller's array in place instead of copying it into its own tensor
            # (2.4 MB at batch 8 here, ~2% of the INT8 batch time); safe because infer() is synchronous and OpenVINO
            # copies anyway when the array is not C-contiguous float32. Outputs are copied out (share_outputs is
            # off), so the request can serve the next call at once.
            return (pair[0] if len(batch) == 1 else pair[1]).infer({0: batch}, share_inputs=True)[0]
        finally:
            self._free.put(pair)

    def runtime_property(self, name: str) -> Any:
        """What OpenVINO settled on for the compiled model, e.g. ``"INFERENCE_NUM_THREADS"``."""
        return self._compiled.get_property(name)


class OpenVINOEngine:
    device = "cpu"

    def __init__(
        self,
        artifact: Path,
        threads: int | None = None,
        verify: bool = True,
        *,
        cpu_pinning: bool | None = None,
        streams: int = 1,
    ) -> None:
        """``cpu_pinning`` overrides COMPILE_CONFIG's (off). True restores OpenVINO's default: for a worker with cores
        of its own (DEFECTSTREAM_PIN_INFERENCE_THREADS), and for bench/colocated_engines.py.

        ``streams``: batches inferred at once, each on its share of the ``threads`` (OpenVINO streams). One stream
        spreads every batch over all threads: the lowest latency for a single frame. Several streams need no
        hand-off between threads inside a batch, so they keep the cores busy when other processes (a broker on the
        same machine, the worker's own event loop) take a core now and then; ``concurrent_batches`` tells callers
        how many threads may call :meth:`predict` at once. Capped at ``threads``."""
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
        if streams < 1:
            raise EngineError(f"streams must be at least 1, got {streams}")
        if threads and streams > threads:
            log.info("%d inference streams need as many threads; %d threads, so %d streams", streams, threads, threads)
            streams = int(threads)
        if streams > 1:
            # Explicit, so it wins over the LATENCY hint's one stream (checked: the compiled model reports it).
            config["NUM_STREAMS"] = streams
        self.concurrent_batches = streams
        try:
            self._infer = ServingPlans(str(Path(artifact) / MODEL_FILE), config, self.input_size, requests=streams)
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
