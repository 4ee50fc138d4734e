import numpy as np
import pytest

from models.engines.warmup import warm_up


class RecordingEngine:
    input_size = 8

    def __init__(self, concurrent_batches: int) -> None:
        self.concurrent_batches = concurrent_batches
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return np.full((len(batch), 2), 0.5, dtype=np.float32)


@pytest.mark.parametrize("streams", [1, 2])
def test_every_batch_size_is_run_once_per_concurrent_batch(streams):
    engine = RecordingEngine(streams)
    first_ms = warm_up(engine, 5)
    assert sorted(first_ms) == [1, 2, 3, 4, 5]
    assert all(ms >= 0 for ms in first_ms.values())
    expected = [(size, 3, 8, 8) for size in range(1, 6) for _ in range(streams)]
    assert engine.shapes == expected  # in order: a size's calls back to back reach each of the engine's requests


def test_a_batch_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        warm_up(RecordingEngine(1), 0)
