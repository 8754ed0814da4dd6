"""MAML (Finn, Abbeel & Levine, 2017) for supervised few-shot learning, and first-order FOMAML.

Inner loop: ``num_inner_steps`` gradient steps per task on its support set, all tasks at once
with per-task parameters ``[B, ...]`` (``torch.vmap`` over ``torch.func.functional_call``).
Outer loop: Adam on the mean query loss of the adapted parameters.  Second order (``maml``):
the meta-gradient goes through the inner steps (``create_graph=True``).  First order
(``fomaml``): the query-loss gradient at the adapted parameters is applied to the
meta-parameters, dropping the Hessian terms (paper sec. 5.2).

Evaluation: k = 0..K gradient steps from the meta-parameters on each held-out support set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from metarl.supervised.adaptation import adapt, detached, per_task, predict, staged_query_predictions
from metarl.supervised.batch import FewShotBatch, per_task_loss, query_stats
from metarl.supervised.learner import GRADIENT_STEP, LearnerSpec, register_learner
from metarl.supervised.networks import model_for
from metarl.supervised.task_source import FewShotTaskSource
from metarl.tasks import MetaRLError


@dataclass(frozen=True)
class MAMLConfig:
    """Defaults are the paper's sinusoid setting (sec. 5.1)."""

    meta_batch_size: int = 25
    """Tasks per meta-update."""
    num_inner_steps: int = 1
    """Gradient steps on the support set during meta-training."""
    inner_lr: float = 0.01
    """Inner (and evaluation) step size α: 0.01 for sinusoids, 0.4 for Omniglot in the paper."""
    outer_lr: float = 1e-3
    """Adam step size β of the meta-update."""
    first_order: bool = False
    """FOMAML: drop the second-order terms of the meta-gradient."""
    hidden_sizes: tuple[int, ...] = (40, 40)
    """Regression network's hidden layers (ReLU)."""
    channels: int = 32
    """Filters per conv block of the classification network (the paper: 64)."""


@dataclass(frozen=True)
class FOMAMLConfig(MAMLConfig):
    """First-order MAML: the same hyperparameters with ``first_order`` on."""

    first_order: bool = True
    """FOMAML: drop the second-order terms of the meta-gradient."""


class MAML:
    adaptation_unit = GRADIENT_STEP

    def __init__(self, config: MAMLConfig, *, source: FewShotTaskSource, device: torch.device,
                 generator: torch.Generator):
        if config.num_inner_steps < 1:
            raise MetaRLError(f"agent_options.num_inner_steps: {config.num_inner_steps}; accepted: >= 1")
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.model = model_for(source.input_shape, source.num_classes, hidden_sizes=config.hidden_sizes,
                               channels=config.channels, generator=generator).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.outer_lr)

    def train_iteration(self, batch: FewShotBatch) -> dict[str, float]:
        c = self.config
        batch = batch.to(self.device)
        classification = batch.is_classification
        start = detached(per_task(self.model, batch.num_tasks)) if c.first_order else per_task(self.model, batch.num_tasks)
        adapted = adapt(self.model, start, batch.support_inputs, batch.support_targets, lr=c.inner_lr,
                        num_steps=c.num_inner_steps, classification=classification,
                        create_graph=not c.first_order)
        predictions = predict(self.model, adapted, batch.query_inputs)
        loss = per_task_loss(predictions, batch.query_targets, classification=classification).mean()
        self.optimizer.zero_grad()
        if c.first_order:
            # ∇_φ L(φ) at the adapted parameters, averaged over tasks by the mean above.
            grads = torch.autograd.grad(loss, list(adapted.values()))
            for parameter, grad in zip(self.model.parameters(), grads):
                parameter.grad = grad.sum(0)
        else:
            loss.backward()
        self.optimizer.step()
        return query_stats(loss, predictions, batch)

    def adapt(self, batch: FewShotBatch, *, num_stages: int) -> Iterator[torch.Tensor]:
        return staged_query_predictions(self.model, batch.to(self.device), lr=self.config.inner_lr,
                                        num_stages=num_stages)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def build(config: MAMLConfig, *, source: FewShotTaskSource, device: torch.device,
          generator: torch.Generator) -> MAML:
    return MAML(config, source=source, device=device, generator=generator)


SPEC = register_learner(LearnerSpec(
    name="maml", description="MAML, second order: meta-gradient through the inner steps",
    config_class=MAMLConfig, build=build,
))
FOMAML_SPEC = register_learner(LearnerSpec(
    name="fomaml", description="first-order MAML: the query gradient at the adapted parameters",
    config_class=FOMAMLConfig, build=build,
))
