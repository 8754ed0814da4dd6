"""Aggregates over tasks and seeds: mean, interquartile mean, bootstrap confidence interval."""

from __future__ import annotations

import numpy as np


def interquartile_mean(values: np.ndarray) -> float:
    """Mean of the middle 50% of ``values`` (Agarwal et al., 2021): the 25% trimmed mean that
    rliable and ``scipy.stats.trim_mean(x, 0.25)`` compute, so our figures compare with
    published ones.  ``floor(n / 4)`` values are cut from each end (none when n < 4)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        return float("nan")
    cut = x.size // 4
    return float(x[cut : x.size - cut].mean())


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
