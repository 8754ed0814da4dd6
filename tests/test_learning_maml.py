"""MAML-TRPO really meta-learns: the default run adapts on held-out 2D-navigation goals.

Slow (minutes): run with ``python -m pytest -m slow``.
"""

import pytest

from metarl.config import load_config
from metarl.train import evaluate_run, load_run, train


@pytest.mark.slow
def test_default_run_adapts_on_held_out_goals(tmp_path):
    """The default config (the reference's set-up with a tanh 64-64 policy) cut to 40 of its 100
    iterations, to keep the test's time: measured at 40 iterations, seed 0, 40 held-out goals
    (the default run's own evaluation at iteration 40, benchmarks/RESULTS.md): -38.98 before
    adaptation, -11.39 / -3.97 / -3.81 after 1 / 2 / 3 meta-test steps (0.5, then 0.25); an
    untrained policy is near -74 before and after a step (MAML paper: -40.4, -11.7, -3.3, -3.2)."""
    config = load_config(None, [f"run_dir={tmp_path / 'run'}", "progress=false", "num_iterations=40",
                                "evaluation.interval=0"])
    run_dir = train(config, quiet=True)
    run, iteration = load_run(run_dir)
    result = evaluate_run(run, iteration=iteration)  # 40 held-out goals, k = 0..3 steps
    before, one, _, three = (stage["return"]["mean"] for stage in result["stages"])
    assert one >= -13.5, result["stages"][1]["return"]
    assert one - before >= 20.0, (before, one)
    assert three >= -6.0, result["stages"][3]["return"]
    assert three >= one + 5.0, (one, three)  # the later steps help too
    again, _ = load_run(run_dir)
    assert evaluate_run(again, iteration=iteration) == result  # same seed, same numbers
