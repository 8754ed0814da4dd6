"""Meta-training a supervised learner: tasks from the shared seeded ``TaskSampler``, their
examples from the source, one ``train_iteration`` per meta-batch."""

from __future__ import annotations

from typing import Callable

import numpy as np

from metarl.supervised.learner import Learner
from metarl.supervised.task_source import FewShotTaskSource
from metarl.tasks import TaskSampler


def meta_train(learner: Learner, source: FewShotTaskSource, task_sampler: TaskSampler, *,
               num_iterations: int, num_shots: int, num_query: int, data_rng: np.random.Generator,
               on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> None:
    """``num_iterations`` meta-updates; ``on_iteration(iteration, stats)`` after each (logging)."""
    for iteration in range(num_iterations):
        tasks = task_sampler.sample_train(learner.meta_batch_size)
        stats = learner.train_iteration(source.make_batch(tasks, data_rng, num_shots, num_query))
        if on_iteration is not None:
            on_iteration(iteration + 1, stats)
