"""``FewShotBatch``: the support and query sets of a batch of tasks, task-major.

The supervised counterpart of :class:`metarl.trajectories.Trajectories`: a learner adapts on the
support set of each task and is scored on its query set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarl.tasks import MetaRLError


@dataclass(frozen=True)
class FewShotBatch:
    """``B`` tasks with ``S`` support and ``Q`` query examples each.

    * ``support_inputs [B, S, *input_shape]``, ``query_inputs [B, Q, *input_shape]``;
    * classification: ``support_targets [B, S]``, ``query_targets [B, Q]`` (long, labels
      ``0..num_classes-1`` in the task's own class order); regression: ``[B, S, 1]``, ``[B, Q, 1]``.
    """

    support_inputs: torch.Tensor
    support_targets: torch.Tensor
    query_inputs: torch.Tensor
    query_targets: torch.Tensor
    num_classes: int | None
    """Classes per task (N-way), or ``None`` for regression."""

    def __post_init__(self) -> None:
        B, S = self.support_inputs.shape[:2]
        Q = self.query_inputs.shape[1]
        checks = [
            self.query_inputs.shape[0] == B,
            self.support_inputs.shape[2:] == self.query_inputs.shape[2:],
            self.support_targets.shape[:2] == (B, S),
            self.query_targets.shape[:2] == (B, Q),
        ]
        if not all(checks):
            raise MetaRLError(
                "FewShotBatch: inconsistent shapes; expected support [B, S, ...], query [B, Q, ...], got "
                f"{tuple(self.support_inputs.shape)}, {tuple(self.support_targets.shape)}, "
                f"{tuple(self.query_inputs.shape)}, {tuple(self.query_targets.shape)}"
            )

    @property
    def num_tasks(self) -> int:
        return self.support_inputs.shape[0]

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None

    def to(self, device: torch.device) -> "FewShotBatch":
        return FewShotBatch(self.support_inputs.to(device), self.support_targets.to(device),
                            self.query_inputs.to(device), self.query_targets.to(device), self.num_classes)

    def tasks(self, start: int, stop: int) -> "FewShotBatch":
        """Tasks ``start:stop`` of the batch."""
        return FewShotBatch(self.support_inputs[start:stop], self.support_targets[start:stop],
                            self.query_inputs[start:stop], self.query_targets[start:stop], self.num_classes)


def per_task_loss(predictions: torch.Tensor, targets: torch.Tensor, *, classification: bool) -> torch.Tensor:
    """Mean loss of each task ``[B]``: cross-entropy of logits ``[B, M, C]`` against labels
    ``[B, M]``, or squared error of ``[B, M, 1]`` against ``[B, M, 1]``."""
    if classification:
        B, M, C = predictions.shape
        losses = torch.nn.functional.cross_entropy(predictions.reshape(B * M, C), targets.reshape(B * M),
                                                   reduction="none")
        return losses.view(B, M).mean(1)
    return (predictions - targets).pow(2).flatten(1).mean(1)


def per_task_score(predictions: torch.Tensor, targets: torch.Tensor, *, classification: bool) -> torch.Tensor:
    """What evaluation reports per task ``[B]``: accuracy (classification) or mean squared error."""
    if classification:
        return (predictions.argmax(-1) == targets).double().mean(1)
    return (predictions - targets).pow(2).flatten(1).mean(1).double()


def query_stats(loss: torch.Tensor, predictions: torch.Tensor, batch: FewShotBatch) -> dict[str, float]:
    """What a learner logs after an update: ``loss/query`` and, for classification,
    ``train/query_accuracy`` of the predictions it was computed from."""
    stats = {"loss/query": loss.item()}
    if batch.is_classification:
        stats["train/query_accuracy"] = per_task_score(
            predictions.detach(), batch.query_targets, classification=True).mean().item()
    return stats
