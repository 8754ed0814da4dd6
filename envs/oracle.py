"""Oracle baselines: a vector env whose observations reveal the task.

The shipped families never put the task in the observation (the agent must infer it).  The MAML
paper compares against an *oracle* policy that sees the task; :class:`TaskRevealingVectorEnv`
builds that explicitly by appending a numeric encoding of each sub-env's task to its
observations.  A family declares its encoder as ``TaskFamily(encode_task=...)``, built with the
helpers here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metarl.tasks import Task, TaskEncoder
from metarl.vector_env import VectorTaskEnv, check_tasks


def scalar_encoder(key: str) -> TaskEncoder:
    """Encoder of a scalar task parameter such as ``{"velocity": 1.3}`` -> ``[1.3]``."""
    return TaskEncoder(dim=1, encode=lambda task: np.array([task[key]], dtype=np.float32))


def vector_encoder(key: str, dim: int) -> TaskEncoder:
    """Encoder of a vector task parameter such as ``{"goal": [x, y]}`` -> ``[x, y]``."""
    return TaskEncoder(dim=dim, encode=lambda task: np.asarray(task[key], dtype=np.float32))


def angle_encoder(key: str = "angle") -> TaskEncoder:
    """Encoder of a direction angle as ``[cos, sin]`` (continuous across 0 = 2π)."""
    return TaskEncoder(
        dim=2,
        encode=lambda task: np.array([np.cos(task[key]), np.sin(task[key])], dtype=np.float32),
    )


class TaskRevealingVectorEnv:
    """Wraps a :class:`~metarl.vector_env.VectorTaskEnv`; observations become
    ``[num_envs, observation_dim + encode_task.dim]``: the env's observation, then the task code.

    ``encode_task`` is a :class:`~metarl.tasks.TaskEncoder` (e.g. ``family.encode_task``).
    Until :meth:`set_tasks` is called the appended encoding is zero.
    """

    def __init__(self, env: VectorTaskEnv, encode_task: TaskEncoder) -> None:
        self.env = env
        self.encode_task = encode_task
        self.num_envs = env.num_envs
        self.observation_dim = env.observation_dim + encode_task.dim
        self.action_dim = env.action_dim
        self.action_low = env.action_low
        self.action_high = env.action_high
        self.max_episode_steps = env.max_episode_steps
        self._codes = np.zeros((env.num_envs, encode_task.dim), dtype=np.float32)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        check_tasks(self, tasks)
        self.env.set_tasks(tasks)
        self._codes = np.stack([self.encode_task(task) for task in tasks])

    def _reveal(self, observations: np.ndarray) -> np.ndarray:
        return np.concatenate([observations.astype(np.float32), self._codes], axis=1)

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        return self._reveal(self.env.reset(seed=seed))

    def step(self, actions: np.ndarray):
        observations, rewards, terminated, truncated, infos = self.env.step(actions)
        return self._reveal(observations), rewards, terminated, truncated, infos

    def close(self) -> None:
        self.env.close()
