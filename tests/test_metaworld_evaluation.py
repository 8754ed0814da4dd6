"""Issue 12: one checkpoint scored by our protocol (:mod:`metarl.adapt_then_evaluate`) and by
Meta-World's own ``metaworld.evaluation.metalearning_evaluation`` (through
:class:`metarl.metaworld_evaluation.MetaWorldAgent`) gets the same success rate.

The checkpoint: MAML-TRPO on ML1-reach-v3 whose policy mean was fitted in a few seconds by
behaviour cloning to Meta-World's scripted reach expert on training goals (the expert sees the
goal, the policy does not), so that it succeeds on some held-out goals and not others; MAML's
meta-test inner step runs as shipped in both evaluators.  Runs only with the metaworld extra.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                reason="needs the metaworld extra: pip install 'metarl[metaworld]'")

ENV_NAME = "reach-v3"
POLICY_STD = 0.3
"""The policy's std after cloning: chosen so that held-out goals succeed sometimes, not always."""
NUM_ROUNDS = 20
"""Rounds of one held-out goal each: 40 scored episodes per evaluator (8 rounds left the two
rates 0.06 and 0.38 apart by chance alone)."""
INNER_LRS = (0.01,)
"""MAML's meta-test step, small: the shipped 0.5 on two episodes sends the cloned policy to 0.0
success in both evaluators, and a cross-check at 0 shows nothing; the step still runs in both."""
OPTIONS = dict(adaptation_episodes=2, evaluation_episodes=2)
"""Fewer episodes than Meta-World's 10 + 3, passed to both evaluators alike (CI time)."""
SCORED_ACTIONS = "sample"
"""Both evaluators score sampled actions, as this check's std and rounds were sized for.  Scored
with the mean (the protocol's default) the two agree too, but need more rounds (a task's two
scored episodes are then one outcome): 100 rounds gave Meta-World 0.250 vs ours 0.27 [0.19,
0.36] (4.7 min; 20 rounds: 0.150 vs 0.35 [0.15, 0.55]; benchmarks/RESULTS.md)."""


def _cloned_agent():
    """MAML-TRPO whose policy mean imitates Meta-World's reach expert on 10 training goals."""
    from metaworld.policies import SawyerReachV3Policy

    from agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.tasks import TaskSampler, get_family

    family = get_family(f"ML1-{ENV_NAME}")
    env = family.make_env(TaskSampler(family, seed=0).train_tasks[0])
    expert = SawyerReachV3Policy()
    observations, actions = [], []
    for task in TaskSampler(family, seed=0).train_tasks[:10]:
        env.set_task(task)
        observation, _ = env.reset(seed=0)
        goal = env._active._target_pos.copy()  # the expert needs the goal our observation hides
        for _ in range(100):
            seen = observation.copy()
            seen[36:39] = goal
            action = np.clip(expert.get_action(seen), -1.0, 1.0)
            observations.append(observation)
            actions.append(action)
            observation, *_ = env.step(action)
    env.close()
    agent = MAMLTRPO(MAMLTRPOConfig(eval_inner_lrs=INNER_LRS), observation_dim=39, action_dim=4, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0))
    inputs = torch.as_tensor(np.array(observations), dtype=torch.float32)
    targets = torch.as_tensor(np.array(actions), dtype=torch.float32)
    optimizer = torch.optim.Adam(agent.policy.parameters(), lr=3e-3)
    for _ in range(300):
        loss = ((agent.policy(inputs).mean - targets) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        agent.policy.log_std.fill_(float(np.log(POLICY_STD)))
    return family, agent


def _through_a_checkpoint(agent, run_dir):
    """The agent as both evaluators get it: saved with the project's checkpoint code, loaded
    (``weights_only``) into a fresh MAML-TRPO."""
    from agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
    from metarl.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(run_dir, 0, {"agent": agent.state_dict()})
    loaded = MAMLTRPO(MAMLTRPOConfig(eval_inner_lrs=INNER_LRS), observation_dim=39, action_dim=4,
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(1))
    loaded.load_state_dict(load_checkpoint(path)["agent"])
    for name, value in agent.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[name], value, rtol=0, atol=0)
    return loaded


def _scored_by_metaworld(family, agent):
    """Meta-World's success rate, per-round scores, and the test tasks its env drew (our dicts)."""
    import gymnasium as gym
    from metaworld.evaluation import metalearning_evaluation

    from envs.metaworld import BENCHMARK_SEED, benchmark_tasks, load_benchmark
    from metarl.adapt_then_evaluate import ProtocolOptions
    from metarl.metaworld_evaluation import MetaWorldAgent
    from metarl.rollout import Sampler

    # One sub-env: Meta-World counts the first evaluation episodes to end per class, and with
    # several sub-envs of one class the ones that end first are the successes (they end early).
    envs = gym.make_vec("Meta-World/ML1-test", env_name=ENV_NAME, seed=BENCHMARK_SEED, meta_batch_size=1)
    sampler = Sampler(family, seed=0)
    wrapped = MetaWorldAgent(agent, spec=sampler.describe(), family=family,
                             options=ProtocolOptions(**OPTIONS, scored_actions=SCORED_ACTIONS), seed=0)
    watched = wrapped.watch(envs)
    benchmark = load_benchmark("ML1", ENV_NAME, BENCHMARK_SEED)
    _, ours = benchmark_tasks("ML1", ENV_NAME, BENCHMARK_SEED)
    drawn = []
    init = wrapped.init

    def recording_init():
        index = envs.get_attr("current_task_idx")[0]
        task = envs.get_attr("tasks")[0][index]
        drawn.append(next(t for t, b in zip(ours, benchmark.test_tasks) if b.data == task.data))
        init()

    wrapped.init = recording_init
    success, _, _ = metalearning_evaluation(wrapped, watched, num_evals=NUM_ROUNDS, **OPTIONS)
    wrapped.close()
    envs.close()
    sampler.close()
    return success, drawn


@pytest.mark.slow
def test_our_protocol_and_metaworlds_score_a_cloned_checkpoint_alike(tmp_path):
    from metarl.adapt_then_evaluate import ProtocolOptions, adapt_then_evaluate
    from metarl.rollout import Sampler

    family, cloned = _cloned_agent()
    agent = _through_a_checkpoint(cloned, tmp_path)
    theirs, drawn = _scored_by_metaworld(family, agent)
    sampler = Sampler(family, seed=0)
    options = ProtocolOptions(**OPTIONS, scored_actions=SCORED_ACTIONS, num_rounds=NUM_ROUNDS, tasks_per_round=1,
                              goals_per_class=len(drawn))
    result = adapt_then_evaluate(agent, sampler, drawn, options=options, generator=torch.Generator().manual_seed(1))
    sampler.close()
    ours = result["stages"][1]["success_rate"]
    print(f"Meta-World {theirs:.3f}; ours {ours}; before {result['stages'][0]['success_rate']}")
    assert [t["index"] for t in result["tasks"]] == [t["index"] for t in drawn]
    assert 0.0 < theirs < 1.0 and 0.0 < ours["mean"] < 1.0
    # Both strictly inside (0, 1), so the check can fail: an untrained or over-noisy checkpoint
    # scores 0 in both (tried: the shipped inner step, 0.5, gives 0.0 on both sides).  The seeds of the two sides cannot be aligned (Meta-World ends an evaluation
    # episode at its first success, so the policies draw different noise), hence the CI.
    assert ours["ci_low"] <= theirs <= ours["ci_high"]
