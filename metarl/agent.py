"""The interface every meta-RL agent meets, and nothing more (a Protocol, not a base class).

Training calls ``train_iteration``; evaluation calls ``adapt``.  Neither the training loop nor
the evaluator knows which agent it drives, so every agent is measured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch

from metarl.rollout import Sampler
from metarl.tasks import Task, TaskFamily
from metarl.trajectories import Trajectories


def plural_unit(unit: str) -> str:
    """An ``adaptation_unit`` in the plural: ``"trajectory"`` -> ``"trajectories"``."""
    return unit[:-1] + "ies" if unit.endswith("y") and unit[-2:-1] not in "aeiou" else unit + "s"


class MetaAgent(Protocol):
    adaptation_unit: str
    """What one adaptation stage is: ``"gradient step"``, ``"episode"``, ``"trajectory"``."""
    meta_batch_size: int
    """Training tasks drawn per iteration."""

    def train_iteration(self, tasks: Sequence[Task], sampler: Sampler) -> dict[str, float]:
        """Collect experience on ``tasks`` through ``sampler``, update, and return the stats
        to log (names are namespaced: ``train/...``, ``loss/...``, ``time/...``)."""

    def adapt(
        self,
        tasks: Sequence[Task],
        sampler: Sampler,
        *,
        num_stages: int,
        episodes_per_stage: int,
        generator: torch.Generator,
        mean_actions_from: int | None = None,
    ) -> Iterator[Trajectories]:
        """Start from the meta-learned state and adapt to ``tasks``: yield the trajectories of
        stage 0 (before adaptation) up to stage ``num_stages``, ``episodes_per_stage`` episodes
        per task each, columns task-major.  Must not change the meta-learned parameters.

        ``mean_actions_from``: stages from this index on act with the policy's mean action,
        without exploration noise (what Meta-World's ``eval_action`` plays in the scored
        episodes); earlier stages, and every stage when it is None, sample as in training."""

    def state_dict(self) -> dict[str, Any]:
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...


def acts_with_mean(stage: int, mean_actions_from: int | None) -> bool:
    """Whether stage ``stage`` of :meth:`MetaAgent.adapt` plays the policy's mean action."""
    return mean_actions_from is not None and stage >= mean_actions_from


@dataclass(frozen=True)
class TrainingBudget:
    """What a whole training run costs, known before it starts (evaluation not counted)."""

    env_steps: int
    """Training env steps, an upper bound: episodes that end early take fewer."""
    gradient_steps: int
    """Optimiser steps on the meta-learned parameters (MAML's inner steps are part of the
    meta-objective, not counted)."""


@dataclass(frozen=True)
class AgentSpec:
    """How to build an agent: its config dataclass and a constructor.

    ``build(config, *, family, observation_dim, action_dim, device, generator)`` returns a
    :class:`MetaAgent`; ``budget(config, family, num_iterations)`` returns the
    :class:`TrainingBudget` of a run (None: unknown).
    """

    name: str
    description: str
    config_class: type
    build: Callable[..., MetaAgent]
    step_size_keys: tuple[str, ...] = ()
    """The config keys that set how far one update moves (learning rates, trust-region sizes):
    what the divergence stop tells the user to lower."""
    budget: Callable[[Any, TaskFamily, int], TrainingBudget] | None = None
