"""Matching Networks (Vinyals et al., 2016).

A query's label distribution is an attention-weighted sum of the support labels,
``P(y | x̂, S) = Σ_i a(x̂, x_i) y_i`` with ``a`` the softmax over the support set of the cosine
similarity of the embeddings (paper eq. 1-2).  With ``full_context_embeddings`` the support
embeddings are re-read by a bidirectional LSTM over the support set, ``g(x_i, S) = g'(x_i) +
h→_i + h←_i``, and each query embedding by an attention LSTM over them for
``fce_processing_steps`` steps (paper appendix A.2; the LSTM's hidden state is ``h + r`` rather
than the concatenation ``[h, r]``, a common simplification).  Trained with the negative
log-likelihood of the query labels (Adam); one evaluation stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from metarl.learners.protonet import embed_tasks
from metarl.supervised.batch import FewShotBatch, per_task_loss, query_stats
from metarl.supervised.learner import SUPPORT_SET, LearnerSpec, register_learner, require_classification
from metarl.supervised.networks import ConvEmbedding, seeded
from metarl.supervised.task_source import FewShotTaskSource


@dataclass(frozen=True)
class MatchingConfig:
    meta_batch_size: int = 4
    """Tasks (episodes) per update."""
    lr: float = 1e-3
    """Adam step size."""
    channels: int = 32
    """Filters per conv block of the embedding (the paper: 64)."""
    full_context_embeddings: bool = False
    """Embed the support set with a bidirectional LSTM and the queries with an attention LSTM."""
    fce_processing_steps: int = 5
    """Attention-LSTM steps of the query embedding (K in the paper), with FCE."""


class FullContextEmbedding(nn.Module):
    """The FCE functions g and f of the paper's appendix, on features ``[B, M, D]``."""

    def __init__(self, dim: int, processing_steps: int):
        super().__init__()
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(dim, dim)
        self.processing_steps = processing_steps

    def forward(self, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, Q, D = query.shape
        both_ways, _ = self.support_lstm(support)
        g = support + both_ways[..., :D] + both_ways[..., D:]
        flat_query = query.reshape(B * Q, D)
        h = torch.zeros_like(flat_query)
        c = torch.zeros_like(flat_query)
        readout = torch.zeros_like(flat_query)
        g_per_query = g.unsqueeze(1).expand(B, Q, *g.shape[1:]).reshape(B * Q, -1, D)
        for _ in range(self.processing_steps):
            h, c = self.query_cell(flat_query, (h + readout, c))
            h = h + flat_query
            attention = torch.softmax(torch.einsum("md,msd->ms", h, g_per_query), dim=-1)
            readout = torch.einsum("ms,msd->md", attention, g_per_query)
        return g, h.view(B, Q, D)


class MatchingNetworks:
    adaptation_unit = SUPPORT_SET

    def __init__(self, config: MatchingConfig, *, source: FewShotTaskSource, device: torch.device,
                 generator: torch.Generator):
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.embedding = ConvEmbedding(source.input_shape, channels=config.channels, generator=generator)
        modules = [self.embedding]
        self.context = None
        if config.full_context_embeddings:
            with seeded(generator):
                self.context = FullContextEmbedding(self.embedding.output_dim, config.fce_processing_steps)
            modules.append(self.context)
        self.modules = nn.ModuleList(modules).to(device)
        self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=config.lr)

    def log_probabilities(self, batch: FewShotBatch) -> torch.Tensor:
        """``[B, Q, N]``: log P(y | x̂, S) of each query and class."""
        support, query = embed_tasks(self.embedding, batch)
        if self.context is not None:
            support, query = self.context(support, query)
        similarity = torch.einsum("bqd,bsd->bqs", nn.functional.normalize(query, dim=-1),
                                  nn.functional.normalize(support, dim=-1))
        attention = torch.softmax(similarity, dim=-1)
        one_hot = nn.functional.one_hot(batch.support_targets, batch.num_classes).to(attention.dtype)
        return torch.log(torch.einsum("bqs,bsn->bqn", attention, one_hot).clamp_min(1e-12))

    def train_iteration(self, batch: FewShotBatch) -> dict[str, float]:
        batch = batch.to(self.device)
        log_probs = self.log_probabilities(batch)
        # Cross-entropy of log-probabilities that already sum to one is their NLL.
        loss = per_task_loss(log_probs, batch.query_targets, classification=True).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return query_stats(loss, log_probs, batch)

    def adapt(self, batch: FewShotBatch, *, num_stages: int) -> Iterator[torch.Tensor]:
        del num_stages  # one stage: attention over the support set
        with torch.no_grad():
            yield self.log_probabilities(batch.to(self.device))

    def state_dict(self) -> dict[str, Any]:
        return {"modules": self.modules.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.modules.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])


def build(config: MatchingConfig, *, source: FewShotTaskSource, device: torch.device,
          generator: torch.Generator) -> MatchingNetworks:
    require_classification("matching", source)
    return MatchingNetworks(config, source=source, device=device, generator=generator)


SPEC = register_learner(LearnerSpec(
    name="matching", description="Matching Networks: cosine attention over the support set (optional FCE)",
    config_class=MatchingConfig, build=build, classification_only=True,
))
