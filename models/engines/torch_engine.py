"""Plain torch engine: FP32 on CPU, picks CUDA when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint


def select_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``. Asking for CUDA without one is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available on this machine")
    return requested


class TorchEngine:
    precision = "fp32"

    def __init__(self, checkpoint: Path, device: str = "auto"):
        model, meta = load_checkpoint(checkpoint)
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(meta.class_names)
        self.input_size = meta.input_size
        self.mean, self.std = list(meta.mean), list(meta.std)
        self.version = meta.version

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return torch.softmax(self.model(x), dim=1).float().cpu().numpy()
