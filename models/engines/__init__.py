"""Inference engines behind one interface (:class:`models.engines.base.InferenceEngine`).

``load_engine(path)`` picks the engine for what ``path`` is and what the machine has:
- an artifact directory (from ``defectstream quantize``): OpenVINO INT8 on CPU; on a machine with CUDA, torch FP16
  on the GPU from the artifact's FP32 source checkpoint;
- a checkpoint file (``best.pt``): torch FP32 on CPU, torch FP16 on CUDA.
``kind`` forces one: ``openvino-int8``, ``torch-fp32``, ``torch-bf16``, ``torch-fp16``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.engines.artifact import CHECKPOINT_FILE, META_FILE, read_meta
from models.engines.base import EngineError, InferenceEngine
from models.engines.torch_engine import TorchEngine, cuda_status, select_device

log = logging.getLogger(__name__)

KINDS = ("auto", "openvino-int8", "torch-fp32", "torch-bf16", "torch-fp16")


def load_engine(
    path: Path,
    kind: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    cpu_pinning: bool | None = None,
    streams: int = 1,
) -> InferenceEngine:
    """``cpu_pinning`` and ``streams`` (batches inferred at once) apply to the OpenVINO engine (None: its default,
    unpinned); torch does not pin threads and infers one batch at a time."""
    path = Path(path)
    if kind not in KINDS:
        raise EngineError(f"unknown engine {kind!r}; use one of {', '.join(KINDS)}")
    if not path.exists():
        raise EngineError(f"no model at {path}")
    is_artifact = path.is_dir() and (path / META_FILE).exists()
    if path.is_dir() and not is_artifact:
        raise EngineError(f"{path} is a directory without {META_FILE}; pass an artifact directory or a checkpoint file")
    checkpoint = path / CHECKPOINT_FILE if is_artifact else path
    if is_artifact:
        read_meta(path)  # refuse a corrupt artifact whatever engine is asked for
    resolved = select_device(device)
    on_cuda = resolved.startswith("cuda")
    if kind == "auto":
        if on_cuda:
            kind = "torch-fp16"
        elif is_artifact:
            kind = "openvino-int8"
        else:
            kind = "torch-fp32"
        log.info("engine auto-selected: %s on %s (CUDA: %s)", kind, resolved, cuda_status()[1])
    if kind == "openvino-int8":
        if not is_artifact:
            raise EngineError(f"{path} is a checkpoint; INT8 needs an artifact from `defectstream quantize`")
        from models.engines.openvino_engine import OpenVINOEngine

        return OpenVINOEngine(path, threads=threads, verify=False, cpu_pinning=cpu_pinning, streams=streams)
    precision = kind.split("-", 1)[1]
    return TorchEngine(checkpoint, device=resolved, precision=precision)


__all__ = ["KINDS", "EngineError", "InferenceEngine", "cuda_status", "load_engine", "select_device"]
