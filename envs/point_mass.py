"""The state both NumPy point-mass families share (2D navigation, the point robots): a batch of
positions starting at the origin, one goal per sub-env, moved by clipped actions."""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
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


class PointMassEnv(gym.Env):
    """Single-environment Gymnasium view of a one-sub-env :class:`PointMassBatch` (for
    ``check_env`` and users): the batch does the maths, this adapts shapes and types."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, batch: PointMassBatch, task: Task) -> None:
        bound = batch.action_bound
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-bound, bound, shape=(2,), dtype=np.float32)
        self._batch = batch
        self.set_task(task)

    def set_task(self, task: Task) -> None:
        self.task = dict(task)
        self._batch.set_tasks([task])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self._batch.reset()[0], {}

    def step(self, action):
        observations, rewards, terminated, _, infos = self._batch.step(np.asarray(action)[None])
        info = {key: float(value[0]) for key, value in infos.items()}
        return observations[0], float(rewards[0]), bool(terminated[0]), False, info
