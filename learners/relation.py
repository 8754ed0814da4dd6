"""Relation Networks (Sung et al., 2018).

An embedding keeps feature maps (four conv blocks, only the first two pooled); a class's feature
map is the sum over its support examples; each (query, class) pair is concatenated along the
channels and scored in [0, 1] by a learned relation module (two pooled conv blocks, then a
two-layer MLP with a sigmoid).  Trained by regressing the scores to the one-hot labels (mean
squared error, paper eq. 2; Adam).  One evaluation stage: the class with the highest relation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn
from torch.func import vmap

from metarl.learners.protonet import class_means, embed_tasks
from metarl.supervised.batch import FewShotBatch, query_stats
from metarl.supervised.learner import SUPPORT_SET, LearnerSpec, register_learner, require_classification
from metarl.supervised.networks import ConvEmbedding, conv_block, seeded
from metarl.supervised.task_source import FewShotTaskSource


@dataclass(frozen=True)
class RelationConfig:
    meta_batch_size: int = 4
    """Tasks (episodes) per update."""
    lr: float = 1e-3
    """Adam step size."""
    channels: int = 32
    """Filters per conv block of the embedding and the relation module (the paper: 64)."""
    relation_hidden: int = 8
    """Hidden units of the relation module's MLP (the paper: 8)."""


class RelationModule(nn.Module):
    """``pairs [M, 2C, H, W] -> relation scores [M]`` in [0, 1]."""

    def __init__(self, channels: int, map_shape: tuple[int, ...], hidden: int):
        super().__init__()
        self.blocks = nn.Sequential(conv_block(2 * channels, channels), conv_block(channels, channels))
        with torch.no_grad():
            flat = self.blocks(torch.zeros(2, 2 * channels, *map_shape[1:])).flatten(1).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(pairs).flatten(1)).squeeze(-1)


class RelationNetworks:
    adaptation_unit = SUPPORT_SET

    def __init__(self, config: RelationConfig, *, source: FewShotTaskSource, device: torch.device,
                 generator: torch.Generator):
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.embedding = ConvEmbedding(source.input_shape, channels=config.channels, num_pooled=2,
                                       flatten=False, generator=generator)
        with seeded(generator):
            self.relation = RelationModule(config.channels, self.embedding.output_shape, config.relation_hidden)
        self.modules = nn.ModuleList([self.embedding, self.relation]).to(device)
        self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=config.lr)

    def scores(self, batch: FewShotBatch) -> torch.Tensor:
        """``[B, Q, N]`` relation scores of each query with each class."""
        support, query = embed_tasks(self.embedding, batch)  # [B, S, C, H, W], [B, Q, C, H, W]
        N = batch.num_classes
        # The paper sums the K shots' feature maps; the mean times K is that sum.
        shots = support.shape[1] // N
        classes = class_means(support, batch.support_targets, N) * shots  # [B, N, C, H, W]
        B, Q = query.shape[:2]
        pairs = torch.cat([query.unsqueeze(2).expand(B, Q, N, *query.shape[2:]),
                           classes.unsqueeze(1).expand(B, Q, N, *classes.shape[2:])], dim=3)
        return vmap(self.relation)(pairs.flatten(1, 2)).view(B, Q, N)

    def train_iteration(self, batch: FewShotBatch) -> dict[str, float]:
        batch = batch.to(self.device)
        scores = self.scores(batch)
        one_hot = nn.functional.one_hot(batch.query_targets, batch.num_classes).to(scores.dtype)
        loss = (scores - one_hot).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return query_stats(loss, scores, batch)

    def adapt(self, batch: FewShotBatch, *, num_stages: int) -> Iterator[torch.Tensor]:
        del num_stages  # one stage: relations to the support set
        with torch.no_grad():
            yield self.scores(batch.to(self.device))

    def state_dict(self) -> dict[str, Any]:
        return {"modules": self.modules.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.modules.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])


def build(config: RelationConfig, *, source: FewShotTaskSource, device: torch.device,
          generator: torch.Generator) -> RelationNetworks:
    require_classification("relation", source)
    return RelationNetworks(config, source=source, device=device, generator=generator)


SPEC = register_learner(LearnerSpec(
    name="relation", description="Relation Networks: a learned relation score per query and class",
    config_class=RelationConfig, build=build, classification_only=True,
))
