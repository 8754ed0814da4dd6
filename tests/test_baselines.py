"""Baselines are agents like any other: registered, trained and evaluated by the same code."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import FAMILY_NAMES, TINY, build_agent
from metarl.envs import metaworld as metaworld_adapter
from metarl.agents.baselines import NO_ADAPTATION, PooledTRPO, reveal_observations, task_encoder
from metarl.config import load_config
from metarl.evaluate import meta_evaluate
from metarl.logger import read_metrics
from metarl.registry import list_agents
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, TaskSampler, get_family
from metarl.train import evaluate_run, load_run, train

BASELINES = ["random", "multitask_trpo", "oracle_trpo"]
TINY_BASELINE = [t for t in TINY if "hidden_sizes" not in t]


build = build_agent


def test_baselines_are_registered():
    names = {spec.name for spec in list_agents()}
    assert set(BASELINES) <= names


SOME_METAWORLD = ["ML1-reach-v3", "ML10"] if metaworld_adapter.available() else []
"""Meta-World families (with the extra): one ML1 and ML10 stand for the 52 registered."""


@pytest.mark.parametrize("family_name", FAMILY_NAMES + SOME_METAWORLD)
@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_builds_and_adapts_on_every_family(name, family_name):
    family = get_family(family_name)
    options = {} if name == "random" else {"hidden_sizes": [8]}
    if name == "oracle_trpo" and family.encode_task is None:
        with pytest.raises(MetaRLError, match=f"env family '{family_name}' defines no "
                           "encode_task, so the oracle cannot see its tasks"):
            build(name, family, **options)
        return
    agent = build(name, family, **options)
    tasks = TaskSampler(family, seed=0).held_out("test")[:1]
    sampler = Sampler(family, seed=0)
    try:
        result = meta_evaluate(agent, sampler, tasks, num_stages=1, episodes_per_stage=1,
                               generator=torch.Generator().manual_seed(1))
    finally:
        sampler.close()
    assert result["adaptation_unit"] == NO_ADAPTATION and len(result["stages"]) == 2
    assert all(np.isfinite(entry["return"]["mean"]) for entry in result["stages"])


def test_random_actions_are_uniform_in_the_action_box():
    family = get_family("HalfCheetahVel-MAML")
    agent = build("random", family)
    sampler = Sampler(family, seed=0)
    tasks = TaskSampler(family, seed=0).held_out("test")[:2]
    stages = list(agent.adapt(tasks, sampler, num_stages=0, episodes_per_stage=2,
                              generator=torch.Generator().manual_seed(0)))
    sampler.close()
    env = family.make_vector_env(1)
    actions = stages[0].actions[stages[0].mask.bool()]
    low, high = torch.as_tensor(env.action_low), torch.as_tensor(env.action_high)
    assert (actions >= low).all() and (actions <= high).all()
    # Uniform on [low, high]: mean at the centre, variance (high - low)^2 / 12.
    torch.testing.assert_close(actions.mean(0), (low + high) / 2, atol=0.05, rtol=0)
    torch.testing.assert_close(actions.var(0), (high - low) ** 2 / 12, atol=0.03, rtol=0)


def test_oracle_policy_sees_the_task_and_multitask_does_not():
    family = get_family("Navigation2D")
    oracle, multitask = build("oracle_trpo", family), build("multitask_trpo", family)
    assert oracle.policy.observation_dim == 2 + 2 and multitask.policy.observation_dim == 2
    tasks = [{"goal": [0.3, -0.2]}, {"goal": [-0.1, 0.4]}]
    codes = oracle._codes(tasks, episodes_per_task=3)
    assert codes.shape == (6, 2)
    torch.testing.assert_close(codes[:3], torch.tensor([[0.3, -0.2]] * 3))
    torch.testing.assert_close(codes[3:], torch.tensor([[-0.1, 0.4]] * 3))
    observations = torch.arange(2 * 6 * 2, dtype=torch.float32).view(2, 6, 2)
    revealed = reveal_observations(observations, codes)
    assert revealed.shape == (2, 6, 4)
    torch.testing.assert_close(revealed[1, 4], torch.cat([observations[1, 4], codes[4]]))


def test_oracle_on_a_family_without_an_encoder_is_a_named_error():
    family = dataclasses.replace(get_family("Navigation2D"), name="NoCode", encode_task=None)
    with pytest.raises(MetaRLError, match="'NoCode' defines no encode_task"):
        task_encoder(family)


def test_pooled_adapt_does_not_change_the_policy():
    family = get_family("Navigation2D")
    agent = build("multitask_trpo", family, hidden_sizes=[8])
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    sampler = Sampler(family, seed=0)
    list(agent.adapt(TaskSampler(family, 0).held_out()[:2], sampler, num_stages=2,
                     episodes_per_stage=2, generator=torch.Generator().manual_seed(0)))
    for name, value in agent.policy.state_dict().items():
        torch.testing.assert_close(value, before[name])


def test_trpo_step_improves_the_surrogate_within_the_trust_region():
    family = get_family("Navigation2D")
    agent: PooledTRPO = build("oracle_trpo", family, hidden_sizes=[16], meta_batch_size=4,
                              episodes_per_task=8)
    sampler = Sampler(family, seed=0)
    stats = agent.train_iteration(TaskSampler(family, 0).sample_train(4), sampler)
    assert stats["loss/line_search_accepted"] == 1.0
    assert stats["loss/surrogate_after"] < stats["loss/surrogate_before"]
    assert 0.0 < stats["loss/kl"] <= agent.config.max_kl
    assert sampler.env_steps > 0


def run(tmp_path, name, agent, extra=()):
    config = load_config(None, [*TINY_BASELINE, f"agent={agent}", f"run_dir={tmp_path / name}", *extra])
    return train(config, quiet=True)


@pytest.mark.parametrize("agent", BASELINES)
def test_baseline_runs_are_deterministic_and_resume_exactly(tmp_path, agent):
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}
    full = read_metrics(run(tmp_path, "full", agent))
    again = read_metrics(run(tmp_path, "again", agent))
    assert [strip(m) for m in full] == [strip(m) for m in again]
    assert "eval/return_stage_1" in full[-1] and full[-1]["env_steps"] > 0
    short = run(tmp_path, "cut", agent, ["num_iterations=2"])
    (short / "checkpoints" / "iteration_000002.pt").unlink()
    train(load_config(short / "config.yaml", ["num_iterations=3"]), resume_from=short, quiet=True)
    assert [strip(m) for m in read_metrics(short)] == [strip(m) for m in full]
    # evaluate a baseline's run directory exactly like an agent's
    loaded, iteration = load_run(short)
    result = evaluate_run(loaded, iteration=iteration)
    assert result["adaptation_unit"] == NO_ADAPTATION and len(result["stages"]) == 2


@pytest.mark.slow
def test_oracle_beats_multitask_beats_random_on_navigation(tmp_path):
    """Learning evidence (about 3-6 minutes on 2 busy cores): with the same budget, the oracle
    (which sees the goal) reaches far higher held-out return than the pooled multi-task policy,
    which cannot do better than heading for the middle of the goal square."""
    common = ["num_iterations=30", "evaluation.interval=0", "evaluation.num_tasks=20",
              "evaluation.num_stages=0", "evaluation.episodes_per_stage=10", "progress=false"]
    returns = {}
    for agent in BASELINES:
        run_dir = train(load_config(None, [*common, f"agent={agent}", f"run_dir={tmp_path / agent}"]), quiet=True)
        returns[agent] = read_metrics(run_dir)[-1]["eval/return_stage_0"]
    assert returns["oracle_trpo"] > returns["multitask_trpo"] + 5, returns
    assert returns["multitask_trpo"] > returns["random"], returns
