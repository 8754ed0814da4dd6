"""MAML-TRPO really meta-learns: the default run adapts on held-out 2D-navigation goals.

Slow (minutes): run with ``python -m pytest -m slow``.
"""

import pytest

from metarl.config import load_config
from metarl.train import evaluate_run, load_run, train


@pytest.mark.slow
def test_default_run_adapts_on_held_out_goals(tmp_path):
    config = load_config(None, [f"run_dir={tmp_path / 'run'}", "progress=false"])
    run_dir = train(config, quiet=True)
    run, iteration = load_run(run_dir)
    result = evaluate_run(run, iteration=iteration)  # 40 held-out goals, k = 0..3 steps
    before = result["stages"][0]["return"]["mean"]
    after_one_step = result["stages"][1]["return"]["mean"]
    # MAML paper (2D navigation): -40.4 before adaptation, -11.7 after one step.
    assert after_one_step >= -15.0, result["stages"][1]["return"]
    assert after_one_step - before >= 15.0, (before, after_one_step)
    again, _ = load_run(run_dir)
    assert evaluate_run(again, iteration=iteration) == result  # same seed, same numbers
