"""The interface every inference engine implements; the worker, HTTP predict and benchmarks use only this."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class InferenceEngine(Protocol):
    class_names: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    version: str
    precision: str
    device: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Float32 NCHW batch (already preprocessed) -> class probabilities, shape (N, num_classes)."""
        ...
