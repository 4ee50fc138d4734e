"""torch engine: FP32 / BF16 on CPU, FP16 / BF16 + channels_last on CUDA, optionally torch.compile."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.engines.base import EngineError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cuda_status() -> tuple[bool, str]:
    """Whether a CUDA device is usable, and why not when it is not (never raises)."""
    try:
        if not torch.cuda.is_available():
            return False, "torch reports no CUDA device (no GPU, no driver, or a CPU-only torch build)"
        name = torch.cuda.get_device_name(0)
    except Exception as exc:  # a broken driver raises from inside the CUDA runtime
        return False, f"CUDA present but unusable: {exc}"
    return True, name


def select_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``. Asking for CUDA without one is an error."""
    available, why = cuda_status()
    if requested == "auto":
        return "cuda" if available else "cpu"
    if requested.startswith("cuda") and not available:
        raise EngineError(f"device {requested!r} requested but CUDA is not available on this machine: {why}")
    return requested


class TorchEngine:
    # torch already spreads one batch over its threads (CPU) or the GPU; two batches at once only compete, so
    # predict() lets one call run at a time (a worker whose stages were sized for a multi-stream engine before a
    # hot reload may call it from several threads).
    concurrent_batches = 1

    def __init__(self, checkpoint: Path, device: str = "auto", precision: str = "fp32", compile: bool = False):
        if precision not in PRECISIONS:
            raise EngineError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        model, meta = load_checkpoint(checkpoint)
        self.device = select_device(device)
        on_cuda = self.device.startswith("cuda")
        if precision == "fp16" and not on_cuda:
            raise EngineError("fp16 inference is for CUDA; on CPU use fp32 or bf16")
        self.precision = precision
        self.name = f"torch-{precision}" + ("-compiled" if compile else "")
        self.dtype = PRECISIONS[precision]
        self.model = model.to(self.device).eval()
        if on_cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model = torch.compile(self.model)
        self.class_names = list(meta.class_names)
        self.input_size = meta.input_size
        self.mean, self.std = list(meta.mean), list(meta.std)
        self.version = meta.version
        self.model_name = meta.backbone
        self._one_at_a_time = threading.Lock()

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, non_blocking=True)
        if self.device.startswith("cuda"):
            x = x.to(memory_format=torch.channels_last)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        autocast = (
            torch.autocast(device_type=device_type, dtype=self.dtype)
            if self.precision != "fp32"
            else contextlib.nullcontext()
        )
        with self._one_at_a_time, autocast:
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
