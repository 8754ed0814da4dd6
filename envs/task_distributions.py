"""Task distributions shared by several families (draws only from the generator passed in)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from metarl.tasks import Task

SampleTasks = Callable[[np.random.Generator, int], list[Task]]

DIRECTION_TASKS: tuple[Task, ...] = ({"direction": -1}, {"direction": 1})
"""Backward and forward: the two tasks of the ``*Dir`` families (train = test)."""


def sample_velocities(low: float, high: float) -> SampleTasks:
    """A ``sample_tasks(rng, num_tasks)`` drawing ``{"velocity": v}`` with ``v ~ U[low, high]``."""

    def sample(rng: np.random.Generator, num_tasks: int) -> list[Task]:
        return [{"velocity": float(v)} for v in rng.uniform(low, high, size=num_tasks)]

    return sample


def sample_directions(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    """``num_tasks`` draws of ``{"direction": ±1}``."""
    return [dict(DIRECTION_TASKS[i]) for i in rng.integers(0, 2, size=num_tasks)]


def sample_angles(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    """``{"angle": θ}`` with ``θ ~ U[0, 2π)``."""
    return [{"angle": float(a)} for a in rng.uniform(0.0, 2.0 * np.pi, size=num_tasks)]
