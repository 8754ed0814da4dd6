"""Reptile (Nichol, Achiam & Schulman, 2018) for supervised few-shot learning.

Inner loop: ``num_inner_steps`` plain gradient steps per task, all tasks at once with per-task
parameters ``[B, ...]``.  During meta-training a task's inner loop sees its support and query
examples together (the paper trains on more shots than it tests with); no gradient flows through
it.  Outer loop: ``θ ← θ + ε · mean_i(φ_i − θ)`` (batched Reptile, the paper's Algorithm 2),
ε annealed linearly to ``outer_lr_final`` as in the paper.

Evaluation: k = 0..K gradient steps from the meta-parameters on each held-out support set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from metarl.supervised.adaptation import adapt, detached, per_task, staged_query_predictions
from metarl.supervised.batch import FewShotBatch
from metarl.supervised.learner import GRADIENT_STEP, LearnerSpec, register_learner
from metarl.supervised.networks import model_for
from metarl.supervised.task_source import FewShotTaskSource
from metarl.tasks import MetaRLError


@dataclass(frozen=True)
class ReptileConfig:
    """Defaults suit the sinusoid; the glyph configs set the classification values."""

    meta_batch_size: int = 10
    """Tasks per meta-update (the paper's sinusoid demo used 1)."""
    num_inner_steps: int = 5
    """Gradient steps per task in meta-training (k; Reptile needs k ≥ 2 to meta-learn)."""
    inner_lr: float = 0.02
    """Inner (and evaluation) step size."""
    outer_lr: float = 1.0
    """ε at the start of training."""
    outer_lr_final: float = 0.0
    """ε at ``anneal_iterations`` and after (linear annealing)."""
    anneal_iterations: int = 4000
    """Iterations over which ε goes from ``outer_lr`` to ``outer_lr_final``."""
    hidden_sizes: tuple[int, ...] = (40, 40)
    """Regression network's hidden layers (ReLU)."""
    channels: int = 32
    """Filters per conv block of the classification network."""


class Reptile:
    adaptation_unit = GRADIENT_STEP

    def __init__(self, config: ReptileConfig, *, source: FewShotTaskSource, device: torch.device,
                 generator: torch.Generator):
        if config.num_inner_steps < 1:
            raise MetaRLError(f"agent_options.num_inner_steps: {config.num_inner_steps}; accepted: >= 1")
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.model = model_for(source.input_shape, source.num_classes, hidden_sizes=config.hidden_sizes,
                               channels=config.channels, generator=generator).to(device)
        self.iteration = 0

    def outer_lr(self) -> float:
        c = self.config
        fraction = min(self.iteration / max(c.anneal_iterations, 1), 1.0)
        return c.outer_lr + fraction * (c.outer_lr_final - c.outer_lr)

    def train_iteration(self, batch: FewShotBatch) -> dict[str, float]:
        c = self.config
        batch = batch.to(self.device)
        inputs = torch.cat([batch.support_inputs, batch.query_inputs], dim=1)
        targets = torch.cat([batch.support_targets, batch.query_targets], dim=1)
        adapted = adapt(self.model, detached(per_task(self.model, batch.num_tasks)), inputs, targets,
                        lr=c.inner_lr, num_steps=c.num_inner_steps, classification=batch.is_classification,
                        create_graph=False)
        epsilon = self.outer_lr()
        distance = 0.0
        with torch.no_grad():
            for name, theta in self.model.named_parameters():
                distance += float((adapted[name] - theta).pow(2).sum()) / batch.num_tasks
                theta.add_(epsilon * (adapted[name].mean(0) - theta))  # θ ← θ + ε·mean(φ − θ)
        self.iteration += 1
        return {"train/outer_lr": epsilon, "loss/adaptation_distance": distance ** 0.5}

    def adapt(self, batch: FewShotBatch, *, num_stages: int) -> Iterator[torch.Tensor]:
        return staged_query_predictions(self.model, batch.to(self.device), lr=self.config.inner_lr,
                                        num_stages=num_stages)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.iteration = state["iteration"]


def build(config: ReptileConfig, *, source: FewShotTaskSource, device: torch.device,
          generator: torch.Generator) -> Reptile:
    return Reptile(config, source=source, device=device, generator=generator)


SPEC = register_learner(LearnerSpec(
    name="reptile", description="Reptile: k gradient steps per task, meta-parameters moved toward the result",
    config_class=ReptileConfig, build=build,
))
