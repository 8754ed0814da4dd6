"""The pretrained baseline of MAML's sinusoid experiment (Finn et al., 2017, sec. 5.1, Fig. 2).

One network trained on all tasks pooled (each task's support and query examples, no
adaptation), then fine-tuned at test time with k = 0..K gradient steps on the support set, like
MAML.  What meta-learning must beat: the best single model for the whole task distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from metarl.supervised.adaptation import per_task, predict, staged_query_predictions
from metarl.supervised.batch import FewShotBatch, per_task_loss
from metarl.supervised.learner import GRADIENT_STEP, LearnerSpec, register_learner
from metarl.supervised.networks import model_for
from metarl.supervised.task_source import FewShotTaskSource


@dataclass(frozen=True)
class PretrainedConfig:
    meta_batch_size: int = 25
    """Tasks pooled per update."""
    lr: float = 1e-3
    """Adam step size of the pooled training."""
    inner_lr: float = 0.01
    """Fine-tuning step size at evaluation (MAML's α, for a like-for-like comparison)."""
    hidden_sizes: tuple[int, ...] = (40, 40)
    """Regression network's hidden layers (ReLU)."""
    channels: int = 32
    """Filters per conv block of the classification network."""


class Pretrained:
    adaptation_unit = GRADIENT_STEP

    def __init__(self, config: PretrainedConfig, *, source: FewShotTaskSource, device: torch.device,
                 generator: torch.Generator):
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.model = model_for(source.input_shape, source.num_classes, hidden_sizes=config.hidden_sizes,
                               channels=config.channels, generator=generator).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)

    def train_iteration(self, batch: FewShotBatch) -> dict[str, float]:
        batch = batch.to(self.device)
        inputs = torch.cat([batch.support_inputs, batch.query_inputs], dim=1)
        targets = torch.cat([batch.support_targets, batch.query_targets], dim=1)
        predictions = predict(self.model, per_task(self.model, batch.num_tasks), inputs)
        loss = per_task_loss(predictions, targets, classification=batch.is_classification).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss/pooled": loss.item()}

    def adapt(self, batch: FewShotBatch, *, num_stages: int) -> Iterator[torch.Tensor]:
        return staged_query_predictions(self.model, batch.to(self.device), lr=self.config.inner_lr,
                                        num_stages=num_stages)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def build(config: PretrainedConfig, *, source: FewShotTaskSource, device: torch.device,
          generator: torch.Generator) -> Pretrained:
    return Pretrained(config, source=source, device=device, generator=generator)


SPEC = register_learner(LearnerSpec(
    name="pretrained", description="baseline: one network trained on all tasks pooled, fine-tuned at test time",
    config_class=PretrainedConfig, build=build,
))
