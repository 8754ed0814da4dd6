"""Sinusoid regression (Finn, Abbeel & Levine, 2017, sec. 5.1).

A task is ``y = A sin(x - φ)`` with amplitude ``A ~ U[0.1, 5]`` and phase ``φ ~ U[0, π]``;
inputs ``x ~ U[-5, 5]``.  K-shot: ``K`` support points to adapt on, and separate query points to
score the adapted model.  Training tasks are drawn afresh every iteration; the test split is a
fixed set of tasks drawn once from the same distribution.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from metarl.supervised.batch import FewShotBatch
from metarl.supervised.task_source import FewShotTaskSource, SourceSpec, register_source
from metarl.tasks import Task

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, np.pi)
INPUT_RANGE = (-5.0, 5.0)


def sample_sinusoids(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    amplitudes = rng.uniform(*AMPLITUDE_RANGE, size=num_tasks)
    phases = rng.uniform(*PHASE_RANGE, size=num_tasks)
    return [{"amplitude": float(a), "phase": float(p)} for a, p in zip(amplitudes, phases)]


def sinusoid_batch(tasks: Sequence[Task], rng: np.random.Generator, num_shots: int,
                   num_query: int) -> FewShotBatch:
    """``num_shots`` support and ``num_query`` query points per task, ``x ~ U[-5, 5]``."""
    amplitude = np.array([t["amplitude"] for t in tasks]).reshape(-1, 1, 1)
    phase = np.array([t["phase"] for t in tasks]).reshape(-1, 1, 1)
    x = rng.uniform(*INPUT_RANGE, size=(len(tasks), num_shots + num_query, 1))
    y = amplitude * np.sin(x - phase)
    x, y = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    return FewShotBatch(x[:, :num_shots], y[:, :num_shots], x[:, num_shots:], y[:, num_shots:], None)


def make_sinusoid(*, num_test_tasks: int = 100) -> FewShotTaskSource:
    return FewShotTaskSource(
        name="Sinusoid",
        description="y = A sin(x - φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[-5, 5]; K-shot regression",
        citation="Finn et al. 2017, sec. 5.1",
        sample_tasks=sample_sinusoids,
        make_batch=sinusoid_batch,
        input_shape=(1,),
        num_test_tasks=num_test_tasks,
        task_parameter="amplitude",
    )


register_source(SourceSpec("Sinusoid", "sinusoid regression (MAML sec. 5.1)", make_sinusoid))
