"""Pay each batch size's first-call cost before live frames do."""

from __future__ import annotations

import time

import numpy as np

from models.engines.base import InferenceEngine


def warm_up(engine: InferenceEngine, max_batch: int) -> dict[int, float]:
    """Run one zero batch of every size from 1 to ``max_batch`` through ``engine``, once per batch it infers at once
    (``concurrent_batches``: each OpenVINO infer request meets the size too, though most of the cost is the compiled
    model's: for batches of 3-8 the first request's first call took 28-64 ms more than warm, the second's 1-17 ms,
    ``bench/first_calls.py``). Returns, per size, the milliseconds of its first call.

    Why every size: a worker's batches take whatever size the frames that came within ``max_wait_s`` make, and an
    engine's first call at a new size is slower than later ones: OpenVINO INT8 on the 2-core CPU here, ResNet-50 at
    160 px, took 46-82 ms for the first batch of 3-8 against 20-39 ms afterwards. At line rates such a batch is rare,
    so it lands in the latency tail long after start-up."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    first_ms: dict[int, float] = {}
    for size in range(1, max_batch + 1):
        batch = np.zeros((size, 3, engine.input_size, engine.input_size), dtype=np.float32)
        for call in range(max(1, engine.concurrent_batches)):
            start = time.perf_counter()
            engine.predict(batch)
            if call == 0:
                first_ms[size] = (time.perf_counter() - start) * 1e3
    return first_ms
