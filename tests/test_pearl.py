"""PEARL: the posterior maths against naive references, the context, replay buffers, whole runs
(smoke, determinism, exact resume) and, marked slow, learning on the dense point robot."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from metarl.agents.pearl import (
    PEARLConfig, TaskReplayBuffers, TwinQNetwork, build, context_features,
    kl_to_standard_normal, product_of_gaussians, tanh_gaussian_log_prob,
)
from metarl.config import load_config
from metarl.envs.oracle import TaskRevealingVectorEnv
from metarl.evaluate import meta_evaluate
from metarl.logger import read_metrics
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, TaskSampler, get_family
from metarl.train import evaluate_run, load_run, train

TINY_PEARL = [
    "env=PointRobot-Dense", "agent=pearl", "num_iterations=3", "checkpoint_interval=1",
    "evaluation.interval=2", "evaluation.num_tasks=3", "evaluation.num_stages=2",
    "evaluation.episodes_per_stage=2", "progress=false",
    "agent_options.meta_batch_size=4", "agent_options.num_tasks_sample=2",
    "agent_options.num_initial_steps=20", "agent_options.num_steps_prior=20",
    "agent_options.num_steps_posterior=20", "agent_options.num_extra_rl_steps_posterior=40",
    "agent_options.num_train_steps_per_itr=4", "agent_options.batch_size=8",
    "agent_options.embedding_batch_size=6", "agent_options.hidden_sizes=[16,16]",
    "agent_options.encoder_hidden_sizes=[16]", "agent_options.latent_dim=3",
    "agent_options.buffer_capacity=500", "agent_options.auto_entropy=true",
]
"""A PEARL run small enough for a smoke test (about a second)."""


def tiny_config(**overrides) -> PEARLConfig:
    values = dict(meta_batch_size=4, num_tasks_sample=2, num_initial_steps=20, num_steps_prior=20,
                  num_steps_posterior=20, num_extra_rl_steps_posterior=20,
                  num_train_steps_per_itr=2, batch_size=8, embedding_batch_size=6,
                  hidden_sizes=(16, 16), encoder_hidden_sizes=(16,), latent_dim=3,
                  buffer_capacity=500)
    values.update(overrides)
    return PEARLConfig(**values)


def tiny_agent(family_name="PointRobot-Dense", seed=0, **overrides):
    family = get_family(family_name)
    sampler = Sampler(family, seed=seed)
    probe = sampler.env(1)
    agent = build(tiny_config(**overrides), family=family, observation_dim=probe.observation_dim,
                  action_dim=probe.action_dim, device=torch.device("cpu"),
                  generator=torch.Generator().manual_seed(seed))
    return agent, TaskSampler(family, seed), sampler


# ------------------------------------------------------------------------------- pure maths
def test_product_of_gaussians_equals_pairwise_products():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    variances = torch.rand(3, 7, 4, generator=g, dtype=torch.float64) * 2 + 0.05
    mean, variance = product_of_gaussians(means, variances)
    # Naive reference: fold the factors in one at a time with the two-Gaussian product formula.
    m, v = means[:, 0], variances[:, 0]
    for n in range(1, 7):
        m2, v2 = means[:, n], variances[:, n]
        m, v = (m * v2 + m2 * v) / (v + v2), v * v2 / (v + v2)
    torch.testing.assert_close(mean, m)
    torch.testing.assert_close(variance, v)
    # And the product is the Gaussian whose log-density differs from Σ log Ψ_n by a constant.
    z = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    factors = torch.distributions.Normal(means.unsqueeze(0), variances.sqrt().unsqueeze(0))
    total = factors.log_prob(z.unsqueeze(2)).sum(2)
    product = torch.distributions.Normal(mean, variance.sqrt()).log_prob(z)
    difference = total - product  # [5, 3, 4]: constant over the 5 points z
    torch.testing.assert_close(difference, difference[:1].expand_as(difference))


def test_masked_factors_are_dropped():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    variances = torch.rand(2, 6, 3, generator=g, dtype=torch.float64) + 0.1
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.float64)
    mean, variance = product_of_gaussians(means, variances, mask)
    for i, keep in enumerate(mask.bool()):
        m, v = product_of_gaussians(means[i, keep], variances[i, keep])
        torch.testing.assert_close(mean[i], m)
        torch.testing.assert_close(variance[i], v)


def test_kl_to_prior_matches_closed_form():
    g = torch.Generator().manual_seed(2)
    mean = torch.randn(5, 4, generator=g, dtype=torch.float64)
    variance = torch.rand(5, 4, generator=g, dtype=torch.float64) * 3 + 0.01
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, variance.sqrt()), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mean, variance), expected)
    assert kl_to_standard_normal(torch.zeros(4), torch.ones(4)).item() == 0.0


def test_tanh_gaussian_log_prob_matches_transformed_distribution():
    g = torch.Generator().manual_seed(3)
    mean = torch.randn(6, 2, generator=g, dtype=torch.float64)
    log_std = torch.randn(6, 2, generator=g, dtype=torch.float64) * 0.5
    pre_tanh = mean + log_std.exp() * torch.randn(6, 2, generator=g, dtype=torch.float64)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()])
    expected = reference.log_prob(torch.tanh(pre_tanh)).sum(-1)
    torch.testing.assert_close(tanh_gaussian_log_prob(pre_tanh, mean, log_std), expected)


def test_twin_q_network_is_two_independent_mlps():
    net = TwinQNetwork(5, (7, 3), generator=torch.Generator().manual_seed(0))
    inputs = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    out = net(inputs)
    assert out.shape == (2, 4)
    for i in range(2):
        x = inputs
        for k, (w, b) in enumerate(zip(net.weights, net.biases)):
            x = x @ w[i] + b[i, 0]
            if k < len(net.weights) - 1:
                x = torch.relu(x)
        torch.testing.assert_close(out[i], x.squeeze(-1))


# ------------------------------------------------------------------------------- context
def test_context_holds_next_observation():
    agent, task_sampler, sampler = tiny_agent()
    agent.train_iteration(task_sampler.sample_train(agent.meta_batch_size), sampler)
    slots = torch.tensor([0, 1])
    batch = agent.encoder_replay.sample(slots, 50, torch.Generator().manual_seed(0))
    # Point-robot physics: s' = s + clip(a_env, -0.1, 0.1), a_env rescaled from the unit action.
    env_actions = -0.1 + (batch["actions"] + 1.0) * 0.5 * 0.2
    expected_next = batch["observations"] + env_actions.clamp(-0.1, 0.1)
    torch.testing.assert_close(batch["next_observations"], expected_next, atol=1e-5, rtol=0)
    assert not torch.allclose(batch["next_observations"], batch["observations"])
    context = agent._context(batch)
    O, A = agent.observation_dim, agent.action_dim
    assert context.shape == (2, 50, 2 * O + A + 1)
    torch.testing.assert_close(context[..., -O:], batch["next_observations"])
    torch.testing.assert_close(context[..., O + A], batch["rewards"].squeeze(-1))
    # The posterior reads s': changing only s' changes q(z | c).
    changed = context.clone()
    changed[..., -O:] += 0.5
    with torch.no_grad():
        assert not torch.allclose(agent.posterior(context)[0], agent.posterior(changed)[0])


def test_context_features_layout():
    s, a, r, s2 = torch.ones(3, 2), 2 * torch.ones(3, 1), 3 * torch.ones(3), 4 * torch.ones(3, 2)
    assert context_features(s, a, r, s2)[0].tolist() == [1, 1, 2, 3, 4, 4]


def test_posterior_narrows_as_context_grows():
    agent, _, _ = tiny_agent()
    context = torch.randn(2, 40, 2 * 2 + 2 + 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        variances = torch.stack([agent.posterior(context[:, :k])[1] for k in (1, 2, 5, 10, 20, 40)])
    assert (variances[1:] < variances[:-1]).all()
    # Masking the tail is the same as a shorter context.
    mask = torch.zeros(2, 40)
    mask[:, :10] = 1
    with torch.no_grad():
        torch.testing.assert_close(agent.posterior(context, mask)[1], variances[3])


# ------------------------------------------------------------------------------- replay
def test_replay_buffer_is_first_in_first_out_and_samples_only_filled_slots():
    buffers = TaskReplayBuffers({"x": 1}, num_tasks=2, capacity=4, device=torch.device("cpu"))
    buffers.add(0, {"x": torch.arange(6.0).unsqueeze(1)})  # 0..5 into capacity 4: keeps 2..5
    buffers.add(1, {"x": torch.tensor([[10.0]])})
    assert buffers.sizes == [4, 1]
    assert sorted(buffers.data["x"][0, :, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    sample = buffers.sample(torch.tensor([0, 1, 1]), 200, torch.Generator().manual_seed(0))["x"]
    assert set(sample[0, :, 0].tolist()) == {2.0, 3.0, 4.0, 5.0}
    assert set(sample[1:, :, 0].flatten().tolist()) == {10.0}
    restored = TaskReplayBuffers({"x": 1}, num_tasks=2, capacity=4, device=torch.device("cpu"))
    restored.load_state_dict(buffers.state_dict())
    buffers.add(0, {"x": torch.tensor([[6.0]])})
    restored.add(0, {"x": torch.tensor([[6.0]])})
    assert torch.equal(restored.data["x"][0], buffers.data["x"][0])
    buffers.clear(1)
    assert buffers.sizes == [4, 0]


def test_buffers_are_keyed_by_task_and_filled_as_scheduled():
    agent, task_sampler, sampler = tiny_agent()
    tasks = task_sampler.sample_train(agent.meta_batch_size)
    agent.train_iteration(tasks, sampler)
    assert len(agent.task_slots) == 4
    # Horizon 20: every new task gets 20 initial steps; the 2 collected tasks get 20 prior,
    # 20 posterior (both buffers) and 20 extra RL steps (RL buffer only).
    assert agent.replay.sizes[:4] == [80, 80, 20, 20]
    assert agent.encoder_replay.sizes[:4] == [40, 40, 20, 20]
    # A task drawn again keeps its slot; its encoder buffer is refilled, not appended to.
    agent.train_iteration([tasks[1], tasks[0], *task_sampler.sample_train(2)], sampler)
    assert agent.replay.sizes[:2] == [140, 140]
    assert agent.encoder_replay.sizes[:2] == [40, 40]


def test_critic_can_train_on_the_dense_reward_of_the_sparse_point_robot():
    agent, task_sampler, sampler = tiny_agent("PointRobot-Sparse", critic_reward_key="reward_dense")
    agent.train_iteration(task_sampler.sample_train(agent.meta_batch_size), sampler)
    size = agent.replay.sizes[0]
    rl = {k: v[0, :size] for k, v in agent.replay.data.items()}
    # Dense reward: -distance of s' to the goal, so it is negative and never the sparse 0.
    assert (rl["rewards"] < 0).all()
    encoder_rewards = agent.encoder_replay.data["rewards"][0, : agent.encoder_replay.sizes[0]]
    assert (encoder_rewards >= 0).all()


def test_user_errors_name_what_is_accepted():
    with pytest.raises(MetaRLError, match="fixed set of training tasks"):
        tiny_agent("Navigation2D")
    with pytest.raises(MetaRLError, match="num_tasks_sample"):
        tiny_agent(num_tasks_sample=5)
    agent, task_sampler, sampler = tiny_agent(critic_reward_key="nope")
    with pytest.raises(MetaRLError, match="critic_reward_key.*reward_dense"):
        agent.train_iteration(task_sampler.sample_train(4), sampler)


# ------------------------------------------------------------------------------- updates
def test_encoder_is_trained_by_the_critic_not_by_the_policy():
    slots = torch.tensor([0, 1, 2, 3])
    for cut_z_from_critic in (False, True):
        agent, task_sampler, sampler = tiny_agent(kl_lambda=0.0, num_train_steps_per_itr=0)
        agent.train_iteration(task_sampler.sample_train(4), sampler)
        if cut_z_from_critic:
            # Zero the weights from z's inputs: the critic's loss no longer depends on z, and
            # the policy's loss (which sees z, detached) must not move the encoder.
            with torch.no_grad():
                agent.critic.weights[0][:, agent.observation_dim + agent.action_dim:] = 0.0
        before = [p.detach().clone() for p in agent.encoder.parameters()]
        agent.gradient_step(slots)
        moved = any(not torch.equal(b, p) for b, p in zip(before, agent.encoder.parameters()))
        # With no KL term, only the Bellman error can move the encoder.
        assert moved == (not cut_z_from_critic)


def test_adapt_yields_trajectories_per_stage_and_leaves_the_agent_unchanged():
    agent, task_sampler, sampler = tiny_agent()
    agent.train_iteration(task_sampler.sample_train(4), sampler)
    state = agent.state_dict()
    tasks = task_sampler.held_out()[:3]
    stages = list(agent.adapt(tasks, Sampler(sampler.family, seed=5), num_stages=2,
                              episodes_per_stage=2, generator=torch.Generator().manual_seed(0)))
    assert len(stages) == 3 and all(t.num_episodes == 6 and t.num_steps == 20 for t in stages)
    after = agent.state_dict()
    assert torch.equal(state["generator"], after["generator"])
    assert torch.equal(state["update_generator"], after["update_generator"])
    for name in ("policy", "encoder", "critic"):
        assert all(torch.equal(state[name][k], after[name][k]) for k in state[name])
    assert agent.adaptation_unit == "trajectory"


# ------------------------------------------------------------------------------- whole runs
def run(tmp_path, name, extra=()):
    config = load_config(None, [*TINY_PEARL, f"run_dir={tmp_path / name}", *extra])
    return train(config, quiet=True)


def strip(metrics):
    return [{k: v for k, v in m.items() if not k.startswith("time/") and "per_second" not in k}
            for m in metrics]


def test_smoke_run_through_train(tmp_path):
    metrics = read_metrics(run(tmp_path, "a"))
    assert [m["iteration"] for m in metrics] == [1, 2, 3]
    for key in ("loss/critic", "loss/policy", "loss/kl", "train/alpha", "train/return_prior",
                "train/return_posterior", "train/z_variance"):
        assert math.isfinite(metrics[-1][key]), key
    assert "eval/return_stage_2" in metrics[1] and "eval/return_stage_3" not in metrics[1]
    assert metrics[-1]["env_steps"] > metrics[0]["env_steps"] > 0


def test_same_seed_same_numbers(tmp_path):
    a, b = strip(read_metrics(run(tmp_path, "a"))), strip(read_metrics(run(tmp_path, "b")))
    assert a == b
    assert strip(read_metrics(run(tmp_path, "c", ["seed=1"]))) != a


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = read_metrics(run(tmp_path, "full"))
    short = run(tmp_path, "cut", ["num_iterations=2"])
    (short / "checkpoints" / "iteration_000002.pt").unlink()  # interrupted after iteration 1
    config = load_config(short / "config.yaml", ["num_iterations=3"])
    train(config, resume_from=short, quiet=True)
    resumed = read_metrics(short)
    assert [m["iteration"] for m in resumed] == [1, 2, 3]
    assert strip(resumed) == strip(full)
    # The replay buffers came back with the checkpoint (the evaluation of the loaded run too).
    first, iteration = load_run(short)
    second, _ = load_run(tmp_path / "full")
    assert first.agent.replay.sizes == second.agent.replay.sizes
    assert evaluate_run(first, iteration=iteration) == evaluate_run(second, iteration=iteration)


# ------------------------------------------------------------------------------- learning
LEARNING_OPTIONS = dict(
    meta_batch_size=16, num_tasks_sample=4, num_initial_steps=100, num_steps_prior=20,
    num_steps_posterior=80, num_extra_rl_steps_posterior=0, num_train_steps_per_itr=100,
    batch_size=64, embedding_batch_size=64, hidden_sizes=(64, 64), encoder_hidden_sizes=(64, 64),
    reward_scale=100.0, kl_lambda=1.0, policy_lr=1e-3, qf_lr=1e-3, context_lr=1e-3, discount=0.9,
    buffer_capacity=20_000,
)
"""The paper's point-robot settings (reward scale 100, fixed α = 1, meta-batch 16, discount 0.9,
5 collected tasks → 4) on a budget that runs in minutes on a CPU: 64x64 networks instead of
300x300x300, batch 64, 100 gradient steps per iteration instead of 1000, learning rates 1e-3.

The collection schedule and β are oyster's point-robot recipe for adaptation over several
trajectories (configs/sparse-point-robot.json: few prior steps, many posterior steps that also
feed the encoder, no extra RL-only steps, kl_lambda 1): per collected task 1 trajectory with
z ~ prior, then 4 with z re-inferred from the encoder buffer after each, so that buffer holds
the kind of context the evaluation builds (one prior trajectory, then posterior ones).  Most of
the gain is β: with β = 0.1 the Bellman error (reward scale 100) swamps the bottleneck, the
posterior means drift far outside N(0, I) (|μ| ≈ 10, KL ≈ 65 nats per task), z ~ prior means
no task and the prior trajectory barely leaves the origin.  Seed 0, 150 iterations, last
trajectory: dense schedule with β = 0.1 -11.28, with β = 1 -9.50; this schedule with β = 0.1
-10.64, with β = 1 -9.03 (-8.34 at 100 iterations).  Seed 1: -10.39 (dense schedule, β = 1)
and -10.20 (this one)."""
NUM_TRAJECTORIES = 5
"""Held-out trajectories per goal: the first with z from the prior, then posterior updates."""


def train_and_evaluate(family, options: dict, *, num_iterations: int, seed: int = 0,
                       evaluate_at: tuple[int, ...] = ()) -> list[float]:
    """Train PEARL with ``options`` for ``num_iterations`` and return the mean held-out return of
    each of ``NUM_TRAJECTORIES`` successive trajectories over the 20 test goals, averaged over
    evaluations after ``num_iterations`` and after each iteration in ``evaluate_at``."""
    task_sampler = TaskSampler(family, seed)
    sampler = Sampler(family, seed=seed)
    probe = sampler.env(1)
    agent = build(PEARLConfig(**options), family=family, observation_dim=probe.observation_dim,
                  action_dim=probe.action_dim, device=torch.device("cpu"),
                  generator=torch.Generator().manual_seed(seed))
    evaluations = []
    for iteration in range(1, num_iterations + 1):
        agent.train_iteration(task_sampler.sample_train(agent.meta_batch_size), sampler)
        if iteration in evaluate_at or iteration == num_iterations:
            result = meta_evaluate(agent, Sampler(family, seed=seed + 1), task_sampler.held_out(),
                                   num_stages=NUM_TRAJECTORIES - 1, episodes_per_stage=2,
                                   generator=torch.Generator().manual_seed(seed))
            evaluations.append([stage["return"]["mean"] for stage in result["stages"]])
    return np.mean(evaluations, axis=0).tolist()


def oracle_family(family):
    """The same family with the task's encoding appended to every observation."""
    encode_task = family.encode_task
    return dataclasses.replace(
        family, name=f"{family.name}-oracle",
        make_vector_env=lambda num_envs, **kw: TaskRevealingVectorEnv(
            family.make_vector_env(num_envs, **kw), encode_task))


STAY_AT_ORIGIN = -15.6
"""Return of staying at the origin (-Σ_t distance over 20 steps, averaged over the test goals)."""


@pytest.mark.slow
def test_pearl_posterior_beats_prior_and_closes_half_the_gap_to_the_oracle():
    """Held-out goals: the last trajectory, with z from the posterior over the context gathered
    so far, is well above the first (z from the prior), and closes at least half the gap to a
    task-revealing SAC trained with the same budget (same code with latent_dim 0 and the goal
    appended to the observation) from the prior trajectory, and 40% of the gap from staying at
    the origin (the prior trajectory gets worse as z ~ N(0, I) stops meaning any task, which
    flatters the first measure).  Returns are averaged over the evaluations after 350, 400 and
    450 iterations: one evaluation swings by up to 2.5 from one checkpoint to the next.

    Measured (450 iterations each, about 6 minutes per agent on 2 idle cores), last trajectory
    at 350 / 400 / 450 iterations: seed 0 -6.59 / -7.81 / -6.49 (prior trajectory -20.4, oracle
    -2.58), seed 1 -8.18 / -10.74 / -7.44 (prior -19.1), seed 2 -6.17 / -8.17 / -7.42 (prior
    -18.9); CI's machine once got -9.39 at 450 with seed 0 (its floating point differs, and
    the run with it): the thresholds sit below all of them.  An untrained PEARL's trajectories
    all stay near -16 to -20 and fail the first assertion.  What is left is the policy, not the
    inference: at 150 iterations z is already consistent (its spread over context draws is 0.09
    against 1.2 between goals), and a z inferred from 100 to 400 transitions spread over the
    square does no better than the test's own context; the paper's budget (1000 gradient
    steps per iteration, 300-unit networks) is far beyond a CPU test."""
    family = get_family("PointRobot-Dense")
    num_iterations = 450  # 45,000 gradient steps, about 200,000 env steps
    pearl = train_and_evaluate(family, LEARNING_OPTIONS, num_iterations=num_iterations,
                               evaluate_at=(350, 400))
    oracle = train_and_evaluate(oracle_family(family), {**LEARNING_OPTIONS, "latent_dim": 0},
                                num_iterations=num_iterations)
    print(f"PEARL return per trajectory {[round(r, 2) for r in pearl]}; "
          f"oracle {[round(r, 2) for r in oracle]}")
    prior, posterior, oracle_return = pearl[0], pearl[-1], float(np.mean(oracle))
    assert oracle_return > -4.0, oracle_return  # the oracle itself learned the task
    assert posterior > prior + 8.0, (prior, posterior)
    assert posterior - prior >= 0.50 * (oracle_return - prior), (prior, posterior, oracle_return)
    assert posterior - STAY_AT_ORIGIN >= 0.40 * (oracle_return - STAY_AT_ORIGIN), (posterior, oracle_return)


def test_a_checkpoint_from_another_device_kind_loads_and_reseeds_the_update_stream(tmp_path):
    """A GPU run's checkpoint holds its update generator's CUDA state (16 bytes of Philox, not
    the CPU's 5056): loading it on a CPU used to fail ("Expected a CPUGeneratorImplState"), so a
    run trained on a GPU could not be evaluated without one.  Now the stream is re-seeded from
    the saved bytes: the run evaluates, and loading the same checkpoint twice draws the same."""
    run_dir = run(tmp_path, "a", ["num_iterations=1", "device=cpu"])
    path = run_dir / "checkpoints" / "iteration_000001.pt"
    state = torch.load(path, weights_only=True)
    state["agent"]["update_generator"] = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state
    torch.save(state, path)
    draws = []
    for _ in range(2):
        loaded, iteration = load_run(run_dir)
        try:
            draws.append(torch.rand(4, generator=loaded.agent.update_generator, device=loaded.agent.device))
            assert evaluate_run(loaded, iteration=iteration)["stages"]
        finally:
            loaded.close()
    assert torch.equal(draws[0], draws[1])
