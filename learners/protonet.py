"""Prototypical Networks (Snell, Swersky & Zemel, 2017).

Embed support and query images with the conv embedding; a class's prototype is the mean
embedding of its support examples; a query's logits are its negative squared Euclidean distances
to the prototypes (paper eq. 1-2).  Trained end to end with cross-entropy on the query sets
(Adam).  Adaptation is one pass over the support set: a single evaluation stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.func import vmap

from metarl.supervised.batch import FewShotBatch, per_task_loss, query_stats
from metarl.supervised.learner import SUPPORT_SET, LearnerSpec, register_learner, require_classification
from metarl.supervised.networks import ConvEmbedding
from metarl.supervised.task_source import FewShotTaskSource


@dataclass(frozen=True)
class ProtoNetConfig:
    meta_batch_size: int = 4
    """Tasks (episodes) per update."""
    lr: float = 1e-3
    """Adam step size."""
    channels: int = 32
    """Filters per conv block of the embedding (the paper: 64)."""


def embed_tasks(embedding: torch.nn.Module, batch: FewShotBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Support ``[B, S, ...]`` and query ``[B, Q, ...]`` features, each task embedded as one batch
    (its batch-norm statistics are the task's own, as in training)."""
    S = batch.support_inputs.shape[1]
    features = vmap(embedding)(torch.cat([batch.support_inputs, batch.query_inputs], dim=1))
    return features[:, :S], features[:, S:]


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class mean of ``features [B, S, ...]`` with labels ``[B, S]`` -> ``[B, N, ...]``."""
    one_hot = torch.nn.functional.one_hot(labels, num_classes).to(features.dtype)  # [B, S, N]
    sums = torch.einsum("bsn,bs...->bn...", one_hot, features)
    return sums / one_hot.sum(1).view(*one_hot.shape[:1], num_classes, *([1] * (features.dim() - 2)))


class PrototypicalNetworks:
    adaptation_unit = SUPPORT_SET

    def __init__(self, config: ProtoNetConfig, *, source: FewShotTaskSource, device: torch.device,
                 generator: torch.Generator):
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.embedding = ConvEmbedding(source.input_shape, channels=config.channels, generator=generator).to(device)
        self.optimizer = torch.optim.Adam(self.embedding.parameters(), lr=config.lr)

    def logits(self, batch: FewShotBatch) -> torch.Tensor:
        """``[B, Q, N]``: minus the squared distance of each query to each prototype."""
        support, query = embed_tasks(self.embedding, batch)
        prototypes = class_means(support, batch.support_targets, batch.num_classes)
        return -torch.cdist(query, prototypes).pow(2)

    def train_iteration(self, batch: FewShotBatch) -> dict[str, float]:
        batch = batch.to(self.device)
        logits = self.logits(batch)
        loss = per_task_loss(logits, batch.query_targets, classification=True).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return query_stats(loss, logits, batch)

    def adapt(self, batch: FewShotBatch, *, num_stages: int) -> Iterator[torch.Tensor]:
        del num_stages  # one stage: the prototypes of the support set
        with torch.no_grad():
            yield self.logits(batch.to(self.device))

    def state_dict(self) -> dict[str, Any]:
        return {"embedding": self.embedding.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.embedding.load_state_dict(state["embedding"])
        self.optimizer.load_state_dict(state["optimizer"])


def build(config: ProtoNetConfig, *, source: FewShotTaskSource, device: torch.device,
          generator: torch.Generator) -> PrototypicalNetworks:
    require_classification("protonet", source)
    return PrototypicalNetworks(config, source=source, device=device, generator=generator)


SPEC = register_learner(LearnerSpec(
    name="protonet", description="Prototypical Networks: nearest class-mean embedding",
    config_class=ProtoNetConfig, build=build, classification_only=True,
))
