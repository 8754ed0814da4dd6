"""RL² meta-learns on Meta-World (issue 12, item 4): on held-out goals of ML1 reach-v3 (the goal
hidden from the observation), under Meta-World's protocol, it succeeds far more often than the
untrained agent and than the multi-task baseline trained with the same environment steps.

Runs only with the ``metaworld`` extra (CI's second environment).  The learning test is slow
(``python -m pytest -m slow tests/test_learning_metaworld.py``); the determinism check is not.

Both use Meta-World's protocol (:mod:`metarl.adapt_then_evaluate`, as ``metaworld.evaluation``):
per held-out goal 10 adaptation episodes, then 3 scored, success when ``info["success"]`` is set
at any step of an episode.  The learning test scores one round of the first 40 held-out goals
(each once) with sampled actions (``evaluation.scored_actions=sample``): its margins were
measured so.  Scored with the policy's mean (the protocol's default) the same agents are weaker
and closer together (benchmarks/RESULTS.md, "Meta-World").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarl.config import load_config
from metarl.train import build_run, evaluate_run, load_run, train

pytest.importorskip("metaworld", reason="Meta-World tests need the metaworld extra")

ENGINE = ["env_options.engine=processes", "env_options.num_workers=2"]
EVALUATION = ["evaluation.interval=0", "evaluation.protocol=adapt_then_evaluate", "evaluation.num_rounds=1",
              "evaluation.tasks_per_round=40", "evaluation.scored_actions=sample"]

RL2_PER_ITERATION = 50 * 1 * 2 * 500
"""Env steps of an RL² iteration: 50 goals x 1 trial x 2 episodes x 500 steps."""
RL2 = [
    "env=ML1-reach-v3", "agent=rl2", "torch_threads=1", *ENGINE, *EVALUATION,
    # rl2_ml1_reach's set-up (Meta-World+'s JAX reference) cut to what fits CI: a 64-unit GRU
    # instead of 256 (the update's cost), trials of 2 episodes instead of 10; all 50 training
    # goals an iteration instead of 10, initial std 0.5, Adam 3e-3: the combination (at 1M
    # steps neither 50 goals with std 1.0 and Adam 1e-3, nor 10 goals with std 0.5 and Adam
    # 3e-3 separated from the multi-task baseline; benchmarks/RESULTS.md).
    "agent_options.meta_batch_size=50", "agent_options.trials_per_task=1",
    "agent_options.episodes_per_trial=2", "agent_options.hidden_size=64",
    "agent_options.head_sizes=[64]", "agent_options.init_std=0.5",
    "agent_options.learning_rate=0.003", "agent_options.reward_scale=0.01",
    "agent_options.entropy_coef=0.005", "agent_options.normalize_observations=true",
    "agent_options.num_minibatches=5", "agent_options.num_epochs=10",
    "agent_options.truncation_length=250",
]
MULTITASK_PER_ITERATION = 10 * 2 * 500
"""Env steps of a multi-task TRPO iteration: 10 goals x 2 episodes x 500 steps."""
MULTITASK = [
    "env=ML1-reach-v3", "agent=multitask_trpo", "torch_threads=1", *ENGINE, *EVALUATION,
    "agent_options.meta_batch_size=10", "agent_options.episodes_per_task=2",
    "agent_options.hidden_sizes=[64,64]", "agent_options.activation=tanh",
    "agent_options.gae_lambda=0.95",
]
ENV_STEPS = 1_000_000
"""Training steps of each agent: the issue's 1M (RL²: ~6 min on the CI machine's 2 cores)."""


def _success(result: dict) -> float:
    """Held-out success rate of the scored episodes (the protocol's stage 1)."""
    return result["stages"][-1]["success_rate"]["mean"]


def _final_evaluation(run_dir: Path) -> tuple[int, float]:
    """``(env steps, held-out success rate at the last stage)`` of the evaluation that training
    ran after its last iteration (``evaluation.interval=0``: that one only)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [row for row in rows if "eval/success_rate_stage_1" in row][-1]
    return int(last["env_steps"]), last["eval/success_rate_stage_1"]


@pytest.mark.slow
def test_rl2_on_held_out_reach_goals_against_untrained_and_multitask(tmp_path):
    """RL² and multi-task TRPO, 1M env steps each, seed 0, the first 40 held-out goals under
    Meta-World's protocol.  Measured on the 2-core machine (2026-12-04, 12 min alone): RL² 0.675
    (its first adaptation episode: 0.425), untrained 0.000, multitask 0.367 (benchmarks/RESULTS.md,
    "RL² above the multi-task baseline").  The recipe matters (RL² above): the reference's own
    set-up (rl2_ml1_reach, 10 goals an iteration) did not separate from the goal-blind baseline
    even at its full 2M steps."""
    rl2_config = load_config(None, [*RL2, f"num_iterations={ENV_STEPS // RL2_PER_ITERATION}",
                                    f"run_dir={tmp_path / 'rl2'}", "progress=false"])
    untrained = build_run(rl2_config)
    try:
        untrained_success = _success(evaluate_run(untrained, iteration=0))
    finally:
        untrained.close()

    rl2_dir = train(rl2_config, quiet=True)
    rl2_steps, rl2_success = _final_evaluation(rl2_dir)
    run, iteration = load_run(rl2_dir)
    try:  # the checkpoint evaluates to the numbers training logged: same seed, same numbers
        assert _success(evaluate_run(run, iteration=iteration)) == rl2_success
    finally:
        run.close()

    multitask_config = load_config(None, [
        *MULTITASK, f"num_iterations={ENV_STEPS // MULTITASK_PER_ITERATION}",
        f"run_dir={tmp_path / 'multitask'}", "progress=false"])
    multitask_steps, multitask_success = _final_evaluation(train(multitask_config, quiet=True))
    assert multitask_steps == rl2_steps == ENV_STEPS  # the same training budget

    summary = (f"held-out success under Meta-World's protocol (40 goals, 10 adaptation + 3 scored "
               f"episodes, sampled actions): RL² {rl2_success:.3f}, untrained {untrained_success:.3f}, "
               f"multitask {multitask_success:.3f}")
    print(summary)
    assert rl2_success >= untrained_success + 0.15, summary
    assert rl2_success >= multitask_success + 0.15, summary


def test_same_seed_same_numbers_on_worker_processes(tmp_path):
    """Two tiny RL² runs on ML1 reach-v3 with the parallel engine and the same seed log the same
    metrics and evaluate to the same held-out returns and successes, under Meta-World's protocol
    (the family's own), reduced to 2 goals, 2 adaptation episodes and 1 scored."""
    tiny = ["env=ML1-reach-v3", "agent=rl2", "num_iterations=1", "progress=false", *ENGINE,
            "evaluation.interval=1", "evaluation.num_rounds=1", "evaluation.tasks_per_round=2",
            "evaluation.adaptation_episodes=2", "evaluation.evaluation_episodes=1",
            "agent_options.meta_batch_size=2",
            "agent_options.trials_per_task=2", "agent_options.episodes_per_trial=2",
            "agent_options.hidden_size=8", "agent_options.head_sizes=[8]",
            "agent_options.num_epochs=1", "agent_options.num_minibatches=2", "torch_threads=1"]
    runs = []
    for name in ("a", "b"):
        run_dir = train(load_config(None, [*tiny, f"run_dir={tmp_path / name}"]), quiet=True)
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        runs.append([{key: value for key, value in row.items() if not key.startswith("time/")}
                     for row in metrics])
    assert runs[0] == runs[1]
    assert any("eval/success_rate_stage_1" in row for row in runs[0])
    assert any("eval/success_rate/reach-v3" in row for row in runs[0])  # per class


def test_the_shipped_all_goals_config_trains_as_this_test_does():
    """configs/rl2_ml1_reach_all_goals.yaml ships this test's RL² training set-up: the same
    agent options, engine and torch threads (only its evaluation and length differ)."""
    shipped = load_config("rl2_ml1_reach_all_goals")
    tested = load_config(None, RL2)
    assert shipped.agent_options == tested.agent_options
    assert (shipped.env, shipped.agent, shipped.env_options, shipped.torch_threads, shipped.seed) == (
        tested.env, tested.agent, tested.env_options, tested.torch_threads, tested.seed)
    assert shipped.num_iterations * RL2_PER_ITERATION == ENV_STEPS
