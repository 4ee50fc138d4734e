"""The interface every inference engine implements; the worker, HTTP predict and benchmarks use only this."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EngineError(RuntimeError):
    """An engine cannot be built: missing runtime, missing device, corrupt or mismatched artifact."""


class InferenceEngine(Protocol):
    name: str  # e.g. "openvino-int8", "torch-fp32"
    model_name: str  # the network, e.g. "resnet50"
    class_names: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    version: str
    precision: str  # "int8", "fp32", "bf16", "fp16"
    device: str  # "cpu", "cuda:0", ...
    # How many predict() calls the engine runs side by side (OpenVINO streams); callers may call it from as many
    # threads. 1: one at a time (calls from more threads just queue).
    concurrent_batches: int

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Float32 NCHW batch (already preprocessed) -> class probabilities, shape (N, num_classes)."""
        ...
