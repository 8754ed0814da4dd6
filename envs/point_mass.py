"""The state both NumPy point-mass families share (2D navigation, the point robots): a batch of
positions starting at the origin, one goal per sub-env, moved by clipped actions."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metarl.tasks import Task
from metarl.vector_env import check_actions, check_tasks


class PointMassBatch:
    """Positions ``[num_envs, 2]`` and goals ``[num_envs, 2]`` in ``dtype``; actions are clipped
    to ``[-action_bound, action_bound]^2``.  Subclasses define ``step`` (reward, termination)."""

    observation_dim = 2
    action_dim = 2

    def __init__(self, num_envs: int, *, action_bound: float, max_episode_steps: int,
                 dtype: type = np.float32) -> None:
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.action_bound = action_bound
        self.dtype = dtype
        self.action_low = np.full(2, -action_bound, dtype=np.float32)
        self.action_high = np.full(2, action_bound, dtype=np.float32)
        self.goals = np.zeros((num_envs, 2), dtype=dtype)
        self.positions = np.zeros((num_envs, 2), dtype=dtype)
        self._elapsed = 0

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        check_tasks(self, tasks)
        self.goals = np.asarray([task["goal"] for task in tasks], dtype=self.dtype)

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        """Every point back at the origin (the start is deterministic, so ``seed`` is unused)."""
        self.positions = np.zeros((self.num_envs, 2), dtype=self.dtype)
        self._elapsed = 0
        return self.positions.astype(np.float32)

    def _move(self, actions: np.ndarray) -> None:
        """Apply clipped ``actions [num_envs, 2]`` and count the step."""
        actions = check_actions(self, actions)
        clipped = np.clip(actions, -self.action_bound, self.action_bound).astype(self.dtype)
        self.positions = self.positions + clipped
        self._elapsed += 1

    def close(self) -> None:
        pass
