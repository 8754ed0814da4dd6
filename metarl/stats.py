"""Aggregates over tasks and seeds: mean, interquartile mean, bootstrap confidence interval."""

from __future__ import annotations

import warnings
from typing import Any

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


# ------------------------------------------------------------------ over training seeds (rliable)
SEED_BOOTSTRAP_REPS = 2000
"""Bootstrap resamples for the statistics over seeds (rliable's default, 50 000, takes minutes)."""


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError:
        from metarl.tasks import MetaRLError

        raise MetaRLError("statistics over training seeds need rliable; install it with "
                          "pip install 'metarl[stats]' (or the dev extra)") from None
    return library, metrics


def _interval_estimates(*args: Any, seed: int, **kwargs: Any) -> tuple[dict, dict]:
    """``rliable.library.get_interval_estimates``, seeded, without the FutureWarning that arch 7
    raises at every call because rliable still passes ``random_state`` (known, not ours).

    rliable's ``StratifiedBootstrap`` draws its indices from NumPy's *global* generator whatever
    ``random_state`` says, so the global state is seeded for the call and restored after it:
    the same scores give the same interval, and nobody else's random stream moves."""
    library, _ = _rliable()
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            return library.get_interval_estimates(*args, random_state=np.random.RandomState(seed), **kwargs)
    finally:
        np.random.set_state(saved)


def over_seeds(scores: np.ndarray, *, reps: int = SEED_BOOTSTRAP_REPS, seed: int = 0) -> dict[str, Any]:
    """IQM and mean of ``scores [num_runs, num_tasks]`` (a row per training seed, a column per
    held-out task) with rliable's stratified bootstrap 95% CIs, resampling runs within each task
    and the tasks too (``task_bootstrap``): held-out tasks are a draw from the family, not a
    fixed benchmark, so their spread belongs in the interval."""
    _, metrics = _rliable()
    scores = np.asarray(scores, dtype=np.float64)

    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    points, intervals = _interval_estimates(
        {"scores": scores}, aggregate, task_bootstrap=True, reps=reps,
        seed=seed)
    (iqm, mean), interval = points["scores"], intervals["scores"]
    return {"iqm": float(iqm), "iqm_ci": [float(interval[0, 0]), float(interval[1, 0])],
            "mean": float(mean), "mean_ci": [float(interval[0, 1]), float(interval[1, 1])],
            "num_runs": int(scores.shape[0]), "num_tasks": int(scores.shape[1])}


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks (Agarwal et al. 2021; rliable's
    ``metrics.probability_of_improvement``): per task, the Mann-Whitney U of X's runs against
    Y's over ``num_runs_x * num_runs_y``, ties counting one half.  Vectorised, because rliable's
    per-task scipy call makes a 2000-resample bootstrap take minutes."""
    x, y = np.asarray(scores_x, dtype=np.float64), np.asarray(scores_y, dtype=np.float64)
    difference = x[:, None, :] - y[None, :, :]                       # [runs_x, runs_y, tasks]
    wins = (difference > 0).mean((0, 1)) + 0.5 * (difference == 0).mean((0, 1))
    return float(wins.mean())


def probability_of_improvement_ci(scores_x: np.ndarray, scores_y: np.ndarray, *,
                                  reps: int = SEED_BOOTSTRAP_REPS, seed: int = 0) -> dict[str, Any]:
    """:func:`probability_of_improvement` of ``[runs_x, tasks]`` over ``[runs_y, tasks]`` (the
    same task columns) with rliable's stratified bootstrap 95% CI (runs of each resampled
    independently within each task)."""
    points, intervals = _interval_estimates(
        {"pair": (np.asarray(scores_x, dtype=np.float64), np.asarray(scores_y, dtype=np.float64))},
        lambda x, y: np.array([probability_of_improvement(x, y)]), reps=reps,
        seed=seed)
    return {"probability": float(points["pair"][0]),
            "ci": [float(intervals["pair"][0, 0]), float(intervals["pair"][1, 0])]}


def performance_profile(scores: np.ndarray, thresholds: np.ndarray, *,
                        reps: int = SEED_BOOTSTRAP_REPS, seed: int = 0) -> dict[str, np.ndarray]:
    """Fraction of (run, task) scores above each of ``thresholds [K]`` (rliable's score
    distribution) with stratified bootstrap 95% CIs: ``{"fraction", "low", "high"}``, each ``[K]``."""
    thresholds = np.asarray(thresholds, dtype=np.float64)

    def profile(x: np.ndarray) -> np.ndarray:  # [K]: the fraction of x above each threshold
        return (x.reshape(-1)[None, :] > thresholds[:, None]).mean(1)

    points, intervals = _interval_estimates(
        {"scores": np.asarray(scores, dtype=np.float64)}, profile, task_bootstrap=True, reps=reps,
        seed=seed)
    return {"fraction": points["scores"], "low": intervals["scores"][0], "high": intervals["scores"][1]}
