"""Statistics over training seeds are rliable's (stratified bootstrap), pinned and importable."""

import numpy as np
import pytest

from metarl.stats import (interquartile_mean, over_seeds, performance_profile,
                          probability_of_improvement, probability_of_improvement_ci)

rliable_metrics = pytest.importorskip("rliable.metrics")


def test_rliable_imports_with_the_pinned_pandas():
    import rliable.library  # noqa: F401  (fails with pandas 3 through arch 7.2)

    assert rliable_metrics.aggregate_iqm(np.array([[0, 0, 0, 1, 10]])) == pytest.approx(1 / 3)


def test_over_seeds_is_rliables_iqm_and_mean_with_a_ci_that_covers_them():
    scores = np.random.default_rng(0).normal(size=(3, 20))
    summary = over_seeds(scores, reps=500)
    assert summary["iqm"] == pytest.approx(rliable_metrics.aggregate_iqm(scores)) == pytest.approx(
        interquartile_mean(scores))
    assert summary["mean"] == pytest.approx(scores.mean())
    assert summary["iqm_ci"][0] < summary["iqm"] < summary["iqm_ci"][1]
    assert summary["mean_ci"][0] < summary["mean"] < summary["mean_ci"][1]
    assert over_seeds(scores, reps=500) == summary  # seeded
    assert (summary["num_runs"], summary["num_tasks"]) == (3, 20)


def test_probability_of_improvement_matches_rliable():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    x[:, 0] = 1.0
    y[:, 0] = 1.0  # all ties in a task: one half
    assert probability_of_improvement(x, y) == pytest.approx(rliable_metrics.probability_of_improvement(x, y))
    better = probability_of_improvement_ci(x + 3.0, y, reps=300)
    assert better["probability"] > 0.9 and better["ci"][0] > 0.5


def test_performance_profile_is_the_fraction_above_each_threshold():
    scores = np.arange(12.0).reshape(3, 4)
    profile = performance_profile(scores, np.array([-1.0, 5.5, 20.0]), reps=200)
    np.testing.assert_allclose(profile["fraction"], [1.0, 0.5, 0.0])
    assert (profile["low"] <= profile["fraction"]).all() and (profile["fraction"] <= profile["high"]).all()
