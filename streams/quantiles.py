"""Nearest-rank quantiles of latency samples, for the clients' and benchmarks' summaries."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

# How many of its latest samples a long-running client (camera gateway, reject gate) keeps for its summary quantiles.
# Bounded: a camera at 20 frames/s sends 1.7 million frames a day, and keeping every sample grew its heap without
# end. The clients' Prometheus histograms (the gate's) cover the whole run.
RECENT_SAMPLES = 100_000


def recent_samples() -> deque[float]:
    """A sample list that keeps the latest ``RECENT_SAMPLES``."""
    return deque(maxlen=RECENT_SAMPLES)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN when there are no values."""
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))]
