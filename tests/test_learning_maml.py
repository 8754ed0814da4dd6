"""MAML-TRPO really meta-learns: the default run adapts on held-out 2D-navigation goals.

Slow (minutes): run with ``python -m pytest -m slow``.
"""

import pytest

from metarl.config import load_config
from metarl.train import evaluate_run, load_run, train


@pytest.mark.slow
def test_default_run_adapts_on_held_out_goals(tmp_path):
    """The default config (the MAML reference's) cut to 60 of its 100 iterations, to keep the
    test's time: measured at 60 iterations, seed 0, 40 held-out goals: -39.71 before adaptation,
    -10.91 / -6.02 / -5.84 after 1 / 2 / 3 meta-test steps (0.5, then 0.25); an untrained policy
    is near -74 before and after a step (MAML paper: -40.4, -11.7, -3.3, -3.2)."""
    config = load_config(None, [f"run_dir={tmp_path / 'run'}", "progress=false", "num_iterations=60",
                                "evaluation.interval=0"])
    run_dir = train(config, quiet=True)
    run, iteration = load_run(run_dir)
    result = evaluate_run(run, iteration=iteration)  # 40 held-out goals, k = 0..3 steps
    before, one, _, three = (stage["return"]["mean"] for stage in result["stages"])
    assert one >= -14.0, result["stages"][1]["return"]
    assert one - before >= 20.0, (before, one)
    assert three >= -8.0, result["stages"][3]["return"]
    assert three >= one + 3.0, (one, three)  # the later steps help too
    again, _ = load_run(run_dir)
    assert evaluate_run(again, iteration=iteration) == result  # same seed, same numbers
