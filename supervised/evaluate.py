"""Meta-test for supervised learners: adapt on each held-out task's support set, score its query
set, summarise per stage over tasks with the shared statistics (:mod:`metarl.stats`).

The score is accuracy for classification and mean squared error for regression.  The data of
every task (which drawings, which x) comes from a generator seeded by ``seed`` alone, so the same
learner state and seed give the same numbers.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from metarl.evaluate import stage_entry
from metarl.supervised.batch import per_task_score
from metarl.supervised.learner import Learner
from metarl.supervised.task_source import FewShotTaskSource
from metarl.tasks import MetaRLError, Task


def evaluate_learner(learner: Learner, source: FewShotTaskSource, tasks: Sequence[Task], *,
                     num_shots: int, num_query: int, num_stages: int, seed: int,
                     tasks_per_batch: int = 25) -> dict[str, Any]:
    """Returns ``{"metric", "adaptation_unit", "num_tasks", "num_shots", "tasks", "stages":
    [{"stage", "per_task_<metric>": [N], "<metric>": summary, "success_rate": None}, ...]}``
    with ``metric`` ``accuracy`` or ``mse`` (summary as in :func:`metarl.stats.summarize`): the
    layout of :func:`metarl.evaluate.meta_evaluate`'s results, keyed by the metric instead of
    ``return``, so the shared tables, statistics over seeds and plots read both."""
    if not tasks:
        raise MetaRLError("evaluation got no held-out tasks; pass num_tasks >= 1")
    rng = np.random.default_rng(seed)
    per_stage: list[list[torch.Tensor]] = []
    for start in range(0, len(tasks), tasks_per_batch):
        batch = source.make_batch(tasks[start:start + tasks_per_batch], rng, num_shots, num_query)
        scores = [per_task_score(predictions.cpu(), batch.query_targets, classification=batch.is_classification)
                  for predictions in learner.adapt(batch, num_stages=num_stages)]
        if per_stage and len(scores) != len(per_stage):
            raise MetaRLError(f"{type(learner).__name__}.adapt yielded a varying number of stages")
        per_stage = per_stage or [[] for _ in scores]
        for stage, values in enumerate(scores):
            per_stage[stage].append(values)
    metric = "accuracy" if source.is_classification else "mse"
    stages = [stage_entry(stage, torch.cat(values).numpy(), metric=metric) for stage, values in enumerate(per_stage)]
    return {
        "metric": metric,
        "adaptation_unit": learner.adaptation_unit,
        "num_tasks": len(tasks),
        "num_shots": num_shots,
        "tasks": [dict(task) for task in tasks],
        "stages": stages,
    }
