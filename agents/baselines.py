"""Baselines measured with the same protocol as the meta-learners (MAML paper, sec. 5.2/5.3).

* ``random``: actions uniform in the env's action box; no training.
* ``multitask_trpo``: one Gaussian MLP policy trained with TRPO on the pooled training tasks,
  without meta-learning; it does not adapt (every evaluation stage runs the same policy).  This
  is what meta-learning must beat: the best single policy for the whole task distribution.
* ``oracle_trpo``: the same learner on a task-revealing env, i.e. its observations are
  ``[observation, encode_task(task)]`` with the family's ``encode_task`` (the
  encoding :class:`metarl.envs.oracle.TaskRevealingVectorEnv` appends).  An upper reference:
  what a policy that *knows* the task reaches with the same budget.

The task is revealed on the actor's side: ``Sampler.sample`` lays tasks out task-major over
``len(tasks) * E`` sub-envs, so sub-env ``b`` runs task ``b // E`` and the actor appends that
task's code to the observation it feeds the policy, exactly as the wrapper would; the update
appends the same codes to the recorded observations.  This keeps the run's own sampler (and its
env-step count, the x-axis of every curve) untouched.

All three register like any agent, so ``metarl train agent=multitask_trpo`` and ``metarl
evaluate RUN_DIR`` treat them exactly as they treat MAML, RL² or PEARL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from metarl.agent import AgentSpec, TrainingBudget, acts_with_mean
from metarl.envs.oracle import TaskEncoder
from metarl.networks import GaussianMLPPolicy, LinearFeatureBaseline
from metarl.registry import register_agent
from metarl.returns import discounted_returns, generalized_advantages, normalize_advantages
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, Task, TaskFamily
from metarl.trajectories import Trajectories
from metarl.trpo import flatten, line_search_stats, trust_region_step

NO_ADAPTATION = "no-update stage"
"""``adaptation_unit`` of the baselines: each stage is another batch from the same policy."""


# --------------------------------------------------------------------------------------- random
@dataclass(frozen=True)
class RandomConfig:
    """The uniform random policy; it has nothing to learn."""

    meta_batch_size: int = 20
    """Training tasks per iteration (only to report ``train/return`` on the same axes)."""
    episodes_per_task: int = 1
    """Episodes per task and iteration; 0 collects nothing (the env-step axis then stays at 0)."""


def random_budget(config: RandomConfig, family: TaskFamily, num_iterations: int) -> TrainingBudget:
    """Per iteration: ``episodes_per_task`` episodes on each of ``meta_batch_size`` tasks."""
    episodes = config.meta_batch_size * config.episodes_per_task
    return TrainingBudget(num_iterations * episodes * family.max_episode_steps, 0)


class _UniformActor:
    """Actions uniform in ``[low, high]`` from an explicit generator."""

    def __init__(self, low: np.ndarray, high: np.ndarray, generator: torch.Generator):
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)
        self.generator = generator

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        u = torch.rand((observations.shape[0], self.low.shape[0]), generator=self.generator)
        return self.low + (self.high - self.low) * u


class RandomAgent:
    """Uniform random actions.  It has no policy mean: every episode, scored ones included
    (``adapt``'s ``mean_actions_from``), draws its actions uniformly, which is what this
    baseline measures."""

    adaptation_unit = NO_ADAPTATION

    def __init__(self, config: RandomConfig, *, generator: torch.Generator):
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.generator = generator

    @staticmethod
    def _sample(tasks: Sequence[Task], sampler: Sampler, episodes_per_task: int,
                generator: torch.Generator) -> Trajectories:
        env = sampler.env(len(tasks) * episodes_per_task)  # the very env ``sample`` uses: its box
        actor = _UniformActor(env.action_low, env.action_high, generator)
        return sampler.sample(tasks, actor, episodes_per_task=episodes_per_task)

    def train_iteration(self, tasks: Sequence[Task], sampler: Sampler) -> dict[str, float]:
        E = self.config.episodes_per_task
        if E == 0:
            return {}
        start = time.perf_counter()
        trajectories = self._sample(tasks, sampler, E, self.generator)
        return {"train/return": trajectories.episode_returns().mean().item(),
                "time/sample_seconds": time.perf_counter() - start}

    def adapt(self, tasks: Sequence[Task], sampler: Sampler, *, num_stages: int,
              episodes_per_stage: int, generator: torch.Generator,
              mean_actions_from: int | None = None) -> Iterator[Trajectories]:
        for _ in range(num_stages + 1):
            yield self._sample(tasks, sampler, episodes_per_stage, generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


# ------------------------------------------------------------------------- pooled-task TRPO
@dataclass(frozen=True)
class PooledTRPOConfig:
    """TRPO on batches pooled over training tasks.  Defaults match MAML-TRPO's 2D-navigation
    setting: the same policy network (the reference's ReLU 100-100, initial std 1.0 in the
    policy's ``[-1, 1]`` action space), and the same env steps per iteration as MAML with one
    inner step (20 tasks x (20 + 20) episodes)."""

    meta_batch_size: int = 20
    """Training tasks per iteration."""
    episodes_per_task: int = 40
    """Episodes per task and iteration (MAML's inner plus outer batch: 20 + 20)."""
    hidden_sizes: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    init_std: float = 1.0
    discount: float = 0.99
    gae_lambda: float = 1.0
    max_kl: float = 0.01
    """Trust-region radius: mean KL between the policy before and after a step."""
    cg_iterations: int = 10
    cg_damping: float = 1e-5
    line_search_backtrack_ratio: float = 0.8
    line_search_max_steps: int = 15
    baseline_reg_coeff: float = 1e-5


def pooled_budget(config: PooledTRPOConfig, family: TaskFamily, num_iterations: int) -> TrainingBudget:
    """Per iteration: ``episodes_per_task`` episodes on each of ``meta_batch_size`` tasks; one
    TRPO step."""
    episodes = config.meta_batch_size * config.episodes_per_task
    return TrainingBudget(num_iterations * episodes * family.max_episode_steps, num_iterations)


class _PolicyActor:
    """Samples from ``policy([observation, code])``; ``codes [B, D]`` (``D = 0``: no reveal);
    ``mean``: the policy's mean action, no noise drawn."""

    def __init__(self, policy: GaussianMLPPolicy, codes: torch.Tensor, generator: torch.Generator,
                 device: torch.device, *, mean: bool = False):
        self.policy, self.codes, self.generator, self.device = policy, codes, generator, device
        self.mean = mean

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([observations, self.codes], dim=1).to(self.device)
        distribution = self.policy(inputs)
        if self.mean:
            return distribution.mean.cpu()
        noise = torch.randn(distribution.mean.shape, generator=self.generator).to(self.device)
        return (distribution.mean + distribution.stddev * noise).cpu()


def reveal_observations(observations: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``observations [T, B, O]``, ``codes [B, D]`` -> ``[T, B, O + D]`` (the code at every step),
    what :class:`~metarl.envs.oracle.TaskRevealingVectorEnv` would have returned."""
    T = observations.shape[0]
    return torch.cat([observations, codes.unsqueeze(0).expand(T, *codes.shape)], dim=-1)


class PooledTRPO:
    """One policy for all tasks, trained by TRPO; ``encoder`` set: the oracle, which sees the task."""

    adaptation_unit = NO_ADAPTATION

    def __init__(self, config: PooledTRPOConfig, *, observation_dim: int, action_dim: int,
                 device: torch.device, generator: torch.Generator, encoder: TaskEncoder | None):
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.generator = generator
        self.encoder = encoder
        code_dim = encoder.dim if encoder is not None else 0
        self.policy = GaussianMLPPolicy(
            observation_dim + code_dim, action_dim, hidden_sizes=config.hidden_sizes,
            activation=config.activation, init_std=config.init_std, generator=generator,
        ).to(device)
        self.baseline = LinearFeatureBaseline(reg_coeff=config.baseline_reg_coeff)

    def _codes(self, tasks: Sequence[Task], episodes_per_task: int) -> torch.Tensor:
        """``[len(tasks) * E, D]`` task codes laid out task-major like the sampler's sub-envs."""
        if self.encoder is None:
            return torch.zeros(len(tasks) * episodes_per_task, 0)
        codes = torch.from_numpy(np.stack([self.encoder(task) for task in tasks]))
        return codes.repeat_interleave(episodes_per_task, dim=0)

    def _sample(self, tasks: Sequence[Task], sampler: Sampler, episodes_per_task: int,
                generator: torch.Generator, *, mean: bool = False) -> tuple[Trajectories, torch.Tensor]:
        codes = self._codes(tasks, episodes_per_task)
        actor = _PolicyActor(self.policy, codes, generator, self.device, mean=mean)
        return sampler.sample(tasks, actor, episodes_per_task=episodes_per_task), codes

    def train_iteration(self, tasks: Sequence[Task], sampler: Sampler) -> dict[str, float]:
        c = self.config
        N = len(tasks)
        start = time.perf_counter()
        trajectories, codes = self._sample(tasks, sampler, c.episodes_per_task, self.generator)
        sample_seconds = time.perf_counter() - start
        start = time.perf_counter()
        data = trajectories.to(self.device)
        codes = codes.to(self.device)
        observations = reveal_observations(data.observations, codes)
        next_observations = reveal_observations(data.next_observations, codes)
        # Advantages with a linear baseline fitted per task (as in MAML's inner loop): a lower
        # variance estimate of the same pooled policy gradient; the policy never sees the task.
        split = lambda x: x.reshape(x.shape[0], N, c.episodes_per_task, *x.shape[2:])
        mask = split(data.mask)
        returns = discounted_returns(split(data.rewards), mask, discount=c.discount)
        values, next_values = self.baseline.fit_predict(split(observations), split(next_observations),
                                                        returns, mask)
        advantages = generalized_advantages(
            split(data.rewards), values, next_values, split(data.terminated), split(data.dones), mask,
            discount=c.discount, gae_lambda=c.gae_lambda,
        )
        advantages = normalize_advantages(advantages, mask, dim=(0, 1, 2)).reshape(data.mask.shape)
        stats = self._trpo_step(observations, data.actions, advantages, data.mask)
        stats.update({
            "train/return": trajectories.episode_returns().mean().item(),
            "time/sample_seconds": sample_seconds,
            "time/update_seconds": time.perf_counter() - start,
        })
        return stats

    def _trpo_step(self, observations: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor,
                   mask: torch.Tensor) -> dict[str, float]:
        """TRPO (Schulman et al., 2015, eq. 14): maximise the importance-weighted surrogate
        subject to mean KL(π_old || π) <= max_kl, by conjugate gradient and line search."""
        c = self.config
        parameters = list(self.policy.parameters())
        with torch.no_grad():
            old = self.policy(observations)
            old = torch.distributions.Normal(old.mean.clone(), old.stddev.clone())
            old_log_probs = old.log_prob(actions).sum(-1)
        total = mask.sum()

        def objective() -> tuple[torch.Tensor, torch.Tensor]:
            distribution = self.policy(observations)
            ratio = torch.exp(distribution.log_prob(actions).sum(-1) - old_log_probs)
            loss = -(ratio * advantages * mask).sum() / total
            kl = (torch.distributions.kl_divergence(old, distribution).sum(-1) * mask).sum() / total
            return loss, kl

        loss, kl = objective()
        gradient = flatten(torch.autograd.grad(loss, parameters, retain_graph=True))
        kl_gradient = flatten(torch.autograd.grad(kl, parameters, create_graph=True))

        def fisher_product(vector: torch.Tensor) -> torch.Tensor:
            return flatten(torch.autograd.grad(kl_gradient @ vector, parameters, retain_graph=True))

        def evaluate() -> tuple[float, float]:
            with torch.no_grad():
                new_loss, new_kl = objective()
            return new_loss.item(), new_kl.item()

        result = trust_region_step(
            parameters, gradient, fisher_product, evaluate, loss_before=loss.item(), max_kl=c.max_kl,
            cg_iterations=c.cg_iterations, cg_damping=c.cg_damping,
            backtrack_ratio=c.line_search_backtrack_ratio, max_backtracks=c.line_search_max_steps,
        )
        return {**line_search_stats(result, gradient), "train/policy_std": self.policy.log_std.exp().mean().item()}

    def adapt(self, tasks: Sequence[Task], sampler: Sampler, *, num_stages: int,
              episodes_per_stage: int, generator: torch.Generator,
              mean_actions_from: int | None = None) -> Iterator[Trajectories]:
        """No adaptation: every stage is a fresh batch from the same (meta-)trained policy."""
        for stage in range(num_stages + 1):
            yield self._sample(tasks, sampler, episodes_per_stage, generator,
                               mean=acts_with_mean(stage, mean_actions_from))[0]

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.generator.set_state(state["generator"])


def task_encoder(family: TaskFamily) -> TaskEncoder:
    """The family's task encoding for the oracle, or a MetaRLError naming what is missing."""
    if family.encode_task is None:
        raise MetaRLError(
            f"env family {family.name!r} defines no encode_task, so the oracle cannot see its tasks; "
            "use agent=multitask_trpo or agent=random, or give the family an encoder, "
            "TaskFamily(encode_task=...) (metarl.envs.oracle: scalar_encoder, vector_encoder, angle_encoder)"
        )
    return family.encode_task


def build_random(config: RandomConfig, *, generator: torch.Generator, **_: Any) -> RandomAgent:
    return RandomAgent(config, generator=generator)


def build_multitask(config: PooledTRPOConfig, *, observation_dim: int, action_dim: int,
                    device: torch.device, generator: torch.Generator, **_: Any) -> PooledTRPO:
    return PooledTRPO(config, observation_dim=observation_dim, action_dim=action_dim, device=device,
                      generator=generator, encoder=None)


def build_oracle(config: PooledTRPOConfig, *, family: TaskFamily, observation_dim: int,
                 action_dim: int, device: torch.device, generator: torch.Generator,
                 **_: Any) -> PooledTRPO:
    return PooledTRPO(config, observation_dim=observation_dim, action_dim=action_dim, device=device,
                      generator=generator, encoder=task_encoder(family))


RANDOM = register_agent(AgentSpec(
    name="random",
    description="baseline: actions uniform in the action box, no training",
    config_class=RandomConfig,
    build=build_random,
    budget=random_budget,
))
MULTITASK = register_agent(AgentSpec(
    name="multitask_trpo",
    description="baseline: one TRPO policy trained on the pooled training tasks, no adaptation",
    config_class=PooledTRPOConfig,
    build=build_multitask,
    step_size_keys=("max_kl",),
    budget=pooled_budget,
))
ORACLE = register_agent(AgentSpec(
    name="oracle_trpo",
    description="baseline: TRPO on task-revealing observations (family's encode_task), no adaptation",
    config_class=PooledTRPOConfig,
    build=build_oracle,
    step_size_keys=("max_kl",),
    budget=pooled_budget,
))
