"""Statistics over per-item scores. Every interval says what it covers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanCI:
    mean: float
    low: float
    high: float
    n: int
    covers: str
    """What the interval's resampling covers (e.g. 'items', 'seeds')."""

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}] (95% CI over {self.n} {self.covers})"


def mean_ci(
    values: np.ndarray | list[float], covers: str, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> MeanCI:
    """Mean with a BCa bootstrap CI (scipy); a constant sample gets a zero-width interval."""
    from scipy import stats

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("mean_ci of an empty sample")
    mean = float(data.mean())
    if data.size < 2 or np.all(data == data[0]):
        return MeanCI(mean, mean, mean, int(data.size), covers)
    result = stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=level,
        n_resamples=resamples,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return MeanCI(mean, float(low), float(high), int(data.size), covers)
