"""Reptile for RL (Nichol, Achiam & Schulman, 2018, "On First-Order Meta-Learning Algorithms").

Inner loop: on each task of the meta-batch, ``num_inner_steps`` vanilla policy-gradient steps,
each from a fresh batch of the task's own episodes sampled with the current adapted policy.
Outer loop: no gradient through the adaptation at all; the meta-parameters move toward the
adapted ones, ``θ ← θ + ε · mean_i(φ_i − θ)`` (the paper's batched Reptile, Algorithm 2).

The inner loop is MAML's (``agents/maml_trpo.py``): the same Gaussian MLP policy, the same
per-task linear baseline and normalised advantages, all tasks adapted in one batched forward with
per-task parameters ``[N, ...]``.  Reptile differs only in its outer update, so it reuses that
code rather than repeating it, and evaluation (``adapt``) is MAML's: from the meta-parameters,
``k`` inner steps, each from the episodes of the previous stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from metarl.agent import AgentSpec, TrainingBudget
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig, _TaskActor
from metarl.registry import register_agent
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, Task, TaskFamily
from metarl.trajectories import Trajectories


@dataclass(frozen=True)
class ReptileConfig:
    """Hyperparameters; defaults are the 2D-navigation setting of ``configs/reptile_navigation.yaml``."""

    meta_batch_size: int = 20
    """Tasks per meta-iteration."""
    episodes_per_task: int = 20
    """Episodes per task for each inner policy-gradient step."""
    num_inner_steps: int = 3
    """Policy-gradient steps per task in the inner loop (k).  With k = 1 Reptile's update is the
    gradient of the expected loss, i.e. joint training (paper sec. 5); it needs k ≥ 2 to
    meta-learn."""
    inner_lr: float = 0.1
    """Step size of each inner policy-gradient step (and of adaptation at evaluation)."""
    outer_lr: float = 0.5
    """Reptile's ε: the fraction of the way from θ toward the mean adapted parameters."""
    outer_lr_final: float | None = None
    """When set, ε is annealed linearly from ``outer_lr`` to this value over
    ``anneal_iterations`` (the paper anneals ε to 0)."""
    anneal_iterations: int = 100
    """Iterations over which ε is annealed (ignored without ``outer_lr_final``)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_std: float = 0.3
    """Initial policy standard deviation (MAML's 2D-navigation choice, see ``MAMLTRPOConfig``)."""
    discount: float = 0.99
    gae_lambda: float = 1.0
    baseline_reg_coeff: float = 1e-5


class Reptile:
    adaptation_unit = "gradient step"

    def __init__(self, config: ReptileConfig, *, observation_dim: int, action_dim: int,
                 device: torch.device, generator: torch.Generator):
        if config.num_inner_steps < 1:
            raise MetaRLError(f"agent_options.num_inner_steps: {config.num_inner_steps}; accepted: >= 1")
        if not 0.0 < config.outer_lr <= 1.0:
            raise MetaRLError(f"agent_options.outer_lr: {config.outer_lr}; accepted: 0 < outer_lr <= 1")
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.generator = generator
        self.iteration = 0
        # MAML's learner supplies the policy and the batched inner step; its outer step is unused.
        self.inner = MAMLTRPO(
            MAMLTRPOConfig(
                meta_batch_size=config.meta_batch_size, episodes_per_task=config.episodes_per_task,
                num_inner_steps=config.num_inner_steps, inner_lr=config.inner_lr,
                hidden_sizes=config.hidden_sizes, activation=config.activation,
                init_std=config.init_std, discount=config.discount, gae_lambda=config.gae_lambda,
                baseline_reg_coeff=config.baseline_reg_coeff,
            ),
            observation_dim=observation_dim, action_dim=action_dim, device=device, generator=generator,
        )
        self.policy = self.inner.policy

    def outer_lr(self) -> float:
        """ε at the current iteration (linear annealing when ``outer_lr_final`` is set)."""
        c = self.config
        if c.outer_lr_final is None:
            return c.outer_lr
        fraction = min(self.iteration / max(c.anneal_iterations, 1), 1.0)
        return c.outer_lr + fraction * (c.outer_lr_final - c.outer_lr)

    def train_iteration(self, tasks: Sequence[Task], sampler: Sampler) -> dict[str, float]:
        c = self.config
        N = len(tasks)
        start = time.perf_counter()
        update_seconds = 0.0
        params = self.inner._detach(self.inner._per_task(N))
        stage_returns = []
        for _ in range(c.num_inner_steps):
            trajectories = sampler.sample(
                tasks, _TaskActor(self.policy, params, N, self.generator, self.device),
                episodes_per_task=c.episodes_per_task,
            )
            stage_returns.append(trajectories.episode_returns().mean().item())
            step_start = time.perf_counter()
            params = self.inner._detach(
                self.inner._inner_step(params, self.inner._batch(trajectories, N), create_graph=False)
            )
            update_seconds += time.perf_counter() - step_start
        step_start = time.perf_counter()
        epsilon = self.outer_lr()
        with torch.no_grad():
            distance = 0.0
            for name, theta in self.policy.named_parameters():
                # Reptile's outer step (batched): θ ← θ + ε · mean_i(φ_i − θ).
                difference = params[name].mean(0) - theta
                distance += float((params[name] - theta).pow(2).sum()) / N
                theta.add_(epsilon * difference)
        self.iteration += 1
        update_seconds += time.perf_counter() - step_start
        return {
            "train/return_before_adaptation": stage_returns[0],
            "train/return_last_inner_step": stage_returns[-1],
            "train/policy_std": self.policy.log_std.exp().mean().item(),
            "train/outer_lr": epsilon,
            "loss/adaptation_distance": distance ** 0.5,
            "time/sample_seconds": time.perf_counter() - start - update_seconds,
            "time/update_seconds": update_seconds,
        }

    def adapt(self, tasks: Sequence[Task], sampler: Sampler, *, num_stages: int,
              episodes_per_stage: int, generator: torch.Generator,
              mean_actions_from: int | None = None) -> Iterator[Trajectories]:
        """MAML's adaptation from the meta-parameters (which it does not change)."""
        return self.inner.adapt(tasks, sampler, num_stages=num_stages,
                                episodes_per_stage=episodes_per_stage, generator=generator,
                                mean_actions_from=mean_actions_from)

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "generator": self.generator.get_state(),
                "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.generator.set_state(state["generator"])
        self.iteration = state["iteration"]


def budget(config: ReptileConfig, family: TaskFamily, num_iterations: int) -> TrainingBudget:
    """Per iteration: ``episodes_per_task`` fresh episodes on each of ``meta_batch_size`` tasks
    for every inner step; one outer (Reptile) step on the meta-parameters."""
    episodes = config.meta_batch_size * config.episodes_per_task * config.num_inner_steps
    return TrainingBudget(num_iterations * episodes * family.max_episode_steps, num_iterations)


def build(config: ReptileConfig, *, family: TaskFamily, observation_dim: int, action_dim: int,
          device: torch.device, generator: torch.Generator) -> Reptile:
    """Like MAML, Reptile needs nothing of the family beyond the observation and action sizes."""
    del family
    return Reptile(config, observation_dim=observation_dim, action_dim=action_dim,
                   device=device, generator=generator)


SPEC = register_agent(AgentSpec(
    name="reptile",
    description="Reptile: k policy-gradient steps per task, meta-parameters moved toward the adapted ones",
    config_class=ReptileConfig,
    build=build,
    step_size_keys=("inner_lr", "outer_lr"),
    budget=budget,
))
