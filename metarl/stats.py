"""Aggregates over tasks and seeds: mean, interquartile mean, bootstrap confidence interval."""

from __future__ import annotations

import numpy as np


def interquartile_mean(values: np.ndarray) -> float:
    """Mean of the middle 50% of ``values`` (Agarwal et al., 2021), trimming 25% each side.

    Fractional trimming is handled by weighting the boundary samples, so the IQM is defined for
    any number of values (it equals the mean of the 2nd and 3rd quartiles when n % 4 == 0).
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        return float("nan")
    lower, upper = 0.25 * n, 0.75 * n
    # Weight of sample i = overlap of [i, i+1) with [lower, upper).
    index = np.arange(n)
    weights = np.clip(np.minimum(index + 1, upper) - np.maximum(index, lower), 0.0, 1.0)
    return float((weights * x).sum() / weights.sum())


def bootstrap_ci(
    values: np.ndarray,
    *,
    statistic=np.mean,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (seeded, reproducible)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, x.size, size=(num_resamples, x.size))
    resampled = np.array([statistic(x[row]) for row in samples])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(values: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """``mean``, ``iqm``, ``ci_low``/``ci_high`` (bootstrap 95% of the mean), ``std``, ``count``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    low, high = bootstrap_ci(x, seed=seed)
    return {
        "mean": float(x.mean()) if x.size else float("nan"),
        "iqm": interquartile_mean(x),
        "ci_low": low,
        "ci_high": high,
        "std": float(x.std()) if x.size else float("nan"),
        "count": int(x.size),
    }
