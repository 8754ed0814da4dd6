"""Reptile for RL (agents/reptile.py): its outer step, evaluation that leaves the meta-parameters
alone, every family through the shared protocol, determinism, and (slow) real adaptation."""

import copy

import numpy as np
import pytest
import torch

from conftest import TINY
from metarl.config import build_dataclass, load_config
from metarl.evaluate import meta_evaluate
from metarl.registry import get_agent_spec
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, TaskSampler, get_family, list_families
from metarl.train import evaluate_run, load_run, train

TINY_REPTILE = [*TINY, "agent=reptile", "agent_options.num_inner_steps=2"]


def build(family, **options):
    spec = get_agent_spec("reptile")
    probe = family.make_vector_env(1)
    return spec.build(build_dataclass(spec.config_class, options), family=family,
                      observation_dim=probe.observation_dim, action_dim=probe.action_dim,
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))


def test_outer_step_moves_the_meta_parameters_toward_the_mean_adapted_ones(monkeypatch):
    """θ ← θ + ε·mean_i(φ_i − θ): with the inner loop replaced by known per-task shifts, the
    update is exactly ε times their mean."""
    family = get_family("Navigation2D")
    agent = build(family, hidden_sizes=[4], outer_lr=0.25, num_inner_steps=1, episodes_per_task=1)
    before = copy.deepcopy(dict(agent.policy.named_parameters()))
    shifts = torch.tensor([1.0, 2.0, 6.0])  # task i's adapted parameters are θ + shift_i

    def fake_inner_step(params, batch, *, create_graph):
        return {name: value + shifts.view(-1, *([1] * (value.dim() - 1))) for name, value in params.items()}

    monkeypatch.setattr(agent.inner, "_inner_step", fake_inner_step)
    sampler = Sampler(family, seed=0)
    stats = agent.train_iteration(TaskSampler(family, 0).sample_train(3), sampler)
    sampler.close()
    for name, theta in agent.policy.named_parameters():
        torch.testing.assert_close(theta.detach(), before[name].detach() + 0.25 * 3.0)
    assert stats["train/outer_lr"] == 0.25


def test_bad_options_are_named():
    family = get_family("Navigation2D")
    with pytest.raises(MetaRLError, match="outer_lr.*accepted: 0 < outer_lr <= 1"):
        build(family, outer_lr=1.5)
    with pytest.raises(MetaRLError, match="num_inner_steps.*accepted: >= 1"):
        build(family, num_inner_steps=0)


def test_outer_lr_is_annealed_linearly():
    agent = build(get_family("Navigation2D"), hidden_sizes=[4], outer_lr=1.0, outer_lr_final=0.0,
                  anneal_iterations=4)
    values = []
    for iteration in range(6):
        agent.iteration = iteration
        values.append(agent.outer_lr())
    assert values == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


@pytest.mark.parametrize("family_name", [f.name for f in list_families()])
def test_adapts_on_every_family_without_changing_the_meta_parameters(family_name):
    family = get_family(family_name)
    agent = build(family, hidden_sizes=[8])
    before = copy.deepcopy(agent.policy.state_dict())
    tasks = TaskSampler(family, seed=0).held_out("test")[:2]
    sampler = Sampler(family, seed=0)
    try:
        result = meta_evaluate(agent, sampler, tasks, num_stages=1, episodes_per_stage=2,
                               generator=torch.Generator().manual_seed(1))
    finally:
        sampler.close()
    assert result["adaptation_unit"] == "gradient step" and len(result["stages"]) == 2
    assert all(np.isfinite(entry["return"]["mean"]) for entry in result["stages"])
    for name, value in agent.policy.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_same_seed_same_numbers_and_resume_reproduces(tmp_path):
    first = train(load_config(None, [*TINY_REPTILE, f"run_dir={tmp_path / 'a'}"]), quiet=True)
    second = train(load_config(None, [*TINY_REPTILE, f"run_dir={tmp_path / 'b'}"]), quiet=True)
    (first_run, iteration), (second_run, _) = load_run(first), load_run(second)
    assert evaluate_run(first_run, iteration=iteration) == evaluate_run(second_run, iteration=iteration)
    for name, value in first_run.agent.policy.state_dict().items():
        assert torch.equal(value, second_run.agent.policy.state_dict()[name])
    # Interrupted after 2 iterations and resumed: the same parameters as the uninterrupted run.
    short = [t for t in TINY_REPTILE if not t.startswith("num_iterations")]
    train(load_config(None, [*short, "num_iterations=2", f"run_dir={tmp_path / 'c'}"]), quiet=True)
    resumed = train(load_config(None, [*short, "num_iterations=3", f"run_dir={tmp_path / 'c'}"]),
                    resume_from=tmp_path / "c", quiet=True)
    resumed_run, _ = load_run(resumed)
    for name, value in first_run.agent.policy.state_dict().items():
        assert torch.equal(value, resumed_run.agent.policy.state_dict()[name]), name


@pytest.mark.slow
def test_reptile_adapts_on_held_out_goals(tmp_path):
    """The shipped config (40 iterations, ~4.5M env steps; about 40 s on 2 loaded cores):
    held-out return after 3 policy-gradient steps is far above the return before adaptation."""
    config = load_config("reptile_navigation", [f"run_dir={tmp_path / 'run'}", "progress=false",
                                                "evaluation.interval=0"])
    run_dir = train(config, quiet=True)
    run, iteration = load_run(run_dir)
    result = evaluate_run(run, iteration=iteration)  # 40 held-out goals, k = 0..3 steps
    before = result["stages"][0]["return"]["mean"]
    after = result["stages"][3]["return"]["mean"]
    # Measured (seed 0): -40.6 before, -13.6 after 3 steps; the multi-task policy stays at -39.
    assert after - before >= 15.0, (before, after)
    assert result["stages"][3]["return"]["ci_low"] > result["stages"][0]["return"]["ci_high"]
    again, _ = load_run(run_dir)
    assert evaluate_run(again, iteration=iteration) == result  # same seed, same numbers
