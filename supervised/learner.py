"""The interface every supervised few-shot learner meets (a Protocol, like ``MetaAgent``), and
the learner registry.

Training calls ``train_iteration`` with a batch of training tasks; evaluation calls ``adapt``
with held-out tasks and scores what it yields.  Gradient-based learners (MAML, Reptile, the
fine-tuned baseline) yield query predictions after 0..k gradient steps on the support set;
metric-based ones (Prototypical, Matching, Relation Networks) classify the query set from the
support set in one pass, so they yield a single stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import torch

from metarl.supervised.batch import FewShotBatch
from metarl.tasks import MetaRLError

GRADIENT_STEP = "gradient step"
SUPPORT_SET = "support set"
"""``adaptation_unit`` of the metric-based learners: one stage, classified from the support set."""


class Learner(Protocol):
    adaptation_unit: str
    """``"gradient step"`` or ``"support set"``."""
    meta_batch_size: int
    """Training tasks per iteration."""

    def train_iteration(self, batch: FewShotBatch) -> dict[str, float]:
        """One meta-update from ``batch``; returns the stats to log (``loss/...``, ``train/...``)."""

    def adapt(self, batch: FewShotBatch, *, num_stages: int) -> Iterator[torch.Tensor]:
        """Query predictions ``[B, Q, ...]`` (logits or scores for classification): stages 0..
        ``num_stages`` for gradient-based learners, one stage for metric-based ones.  Must not
        change the meta-learned parameters."""

    def state_dict(self) -> dict[str, Any]:
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...


@dataclass(frozen=True)
class LearnerSpec:
    """How to build a learner: ``build(config, *, source, device, generator)``."""

    name: str
    description: str
    config_class: type
    build: Callable[..., Learner]
    classification_only: bool = False


_LEARNERS: dict[str, LearnerSpec] = {}


def register_learner(spec: LearnerSpec) -> LearnerSpec:
    _LEARNERS[spec.name] = spec
    return spec


def get_learner_spec(name: str) -> LearnerSpec:
    import metarl.learners  # noqa: F401  (registers the shipped learners)

    if name not in _LEARNERS:
        raise MetaRLError(f"unknown learner {name!r}; accepted: {', '.join(sorted(_LEARNERS))}")
    return _LEARNERS[name]


def list_learners() -> list[LearnerSpec]:
    import metarl.learners  # noqa: F401

    return [_LEARNERS[name] for name in sorted(_LEARNERS)]


def require_classification(name: str, source: Any) -> None:
    """Metric-based learners compare classes; a regression source is a user error."""
    if not source.is_classification:
        raise MetaRLError(f"learner {name!r} classifies; source {source.name!r} is regression "
                          "(accepted: a classification source such as Glyphs or Omniglot)")
