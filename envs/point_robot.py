"""Point robot navigation, dense and sparse (Rakelly et al., 2019, "Efficient Off-Policy
Meta-Reinforcement Learning via Probabilistic Context Variables" (PEARL), appendix: 2D
navigation ``point-robot`` and ``sparse-point-robot``).

A point starts at the origin and moves by its action, clipped to ``[-0.1, 0.1]^2``; the
observation is its position ``[2]``; there is no termination and the horizon is 20.

- ``PointRobot-Dense``: reward ``-||p - g||_2``, goals ``g ~ U[-1, 1]^2``, 80 train / 20 test.
- ``PointRobot-Sparse``: reward ``1 - d`` if ``d = ||p - g||_2 <= 0.2`` else ``0``; 100 goals
  evenly spaced on the upper unit half-circle, split 80 train / 20 test.  The dense reward is in
  ``info["reward_dense"]`` (PEARL meta-trains on it and evaluates on the sparse one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metarl.envs.oracle import vector_encoder
from metarl.tasks import Task, TaskFamily, register_family
from metarl.envs.point_mass import PointMassBatch, PointMassEnv

ACTION_BOUND = 0.1
HORIZON = 20
GOAL_RADIUS = 0.2
NUM_HALF_CIRCLE_GOALS = 100


def sample_dense_goals(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    """Goals ``g ~ U[-1, 1]^2``."""
    goals = rng.uniform(-1.0, 1.0, size=(num_tasks, 2))
    return [{"goal": [float(x), float(y)]} for x, y in goals]


def sample_ood_dense_goals(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    """Goals in ``[-2, 2]^2`` outside the training square (``||g||_inf > 1``)."""
    goals: list[Task] = []
    while len(goals) < num_tasks:
        goal = rng.uniform(-2.0, 2.0, size=2)
        if np.max(np.abs(goal)) > 1.0:
            goals.append({"goal": [float(goal[0]), float(goal[1])]})
    return goals


def half_circle_goals(num_goals: int = NUM_HALF_CIRCLE_GOALS) -> tuple[Task, ...]:
    """``num_goals`` goals at angles ``linspace(0, π, num_goals)`` on the unit circle."""
    angles = np.linspace(0.0, np.pi, num_goals)
    return tuple({"goal": [float(np.cos(a)), float(np.sin(a))]} for a in angles)


SPARSE_GOALS = half_circle_goals()


def sample_sparse_goals(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    """``num_tasks`` draws (with replacement past 100) from the evenly spaced half-circle goals."""
    replace = num_tasks > len(SPARSE_GOALS)
    index = rng.choice(len(SPARSE_GOALS), size=num_tasks, replace=replace)
    return [dict(SPARSE_GOALS[i]) for i in index]


class PointRobotVectorEnv(PointMassBatch):
    """A batch of point robots, each with its own goal, stepped in NumPy.

    Implements :class:`metarl.vector_env.VectorTaskEnv`: observations ``[num_envs, 2]`` are the
    positions.  ``sparse=True`` makes the sparse reward the reward; both rewards are in ``infos``
    (``reward_dense``, ``reward_sparse``) together with ``distance``.
    """

    def __init__(
        self,
        num_envs: int,
        *,
        sparse: bool,
        seed: int = 0,
        max_episode_steps: int = HORIZON,
    ) -> None:
        super().__init__(num_envs, action_bound=ACTION_BOUND, max_episode_steps=max_episode_steps,
                         dtype=np.float64)
        self.sparse = sparse

    def step(self, actions: np.ndarray):
        self._move(actions)
        distance = np.linalg.norm(self.positions - self.goals, axis=1)
        reward_dense = -distance
        # PEARL's sparsify_rewards: zero outside the goal radius, shifted positive inside it.
        reward_sparse = np.where(distance <= GOAL_RADIUS, 1.0 - distance, 0.0)
        rewards = reward_sparse if self.sparse else reward_dense
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.full(self.num_envs, self._elapsed >= self.max_episode_steps)
        infos = {
            "reward_dense": reward_dense,
            "reward_sparse": reward_sparse,
            "distance": distance,
        }
        return self.positions.astype(np.float32), rewards.astype(np.float32), terminated, truncated, infos


class PointRobotEnv(PointMassEnv):
    """Single-environment Gymnasium view of the point robot (for ``check_env`` and users)."""

    def __init__(self, task: Task | None = None, *, sparse: bool = False) -> None:
        super().__init__(PointRobotVectorEnv(1, sparse=sparse), task or {"goal": [1.0, 0.0]})


def _make_dense_env(task: Task | None = None, **kwargs: Any) -> PointRobotEnv:
    return PointRobotEnv(task, sparse=False, **kwargs)


def _make_sparse_env(task: Task | None = None, **kwargs: Any) -> PointRobotEnv:
    return PointRobotEnv(task, sparse=True, **kwargs)


POINT_ROBOT_DENSE = register_family(
    TaskFamily(
        name="PointRobot-Dense",
        description="point to a goal in U[-1,1]^2, reward -distance, horizon 20, 80/20 tasks",
        citation="Rakelly et al. (2019), PEARL, appendix: point-robot 2D navigation",
        sample_tasks=sample_dense_goals,
        make_vector_env=lambda num_envs, *, seed=0: PointRobotVectorEnv(
            num_envs, sparse=False, seed=seed
        ),
        max_episode_steps=HORIZON,
        auto_engine="serial",  # a NumPy batch: microseconds a step, nothing to split
        num_train_tasks=80,
        num_test_tasks=20,
        task_parameter="goal",
        sample_ood_tasks=sample_ood_dense_goals,
        make_env=_make_dense_env,
        encode_task=vector_encoder("goal", 2),
    )
)

POINT_ROBOT_SPARSE = register_family(
    TaskFamily(
        name="PointRobot-Sparse",
        description=(
            "point to a goal on the unit half-circle, reward 1-d inside radius 0.2 else 0 "
            "(dense reward in info), horizon 20, 80/20 of 100 evenly spaced goals"
        ),
        citation="Rakelly et al. (2019), PEARL, appendix: sparse-point-robot",
        sample_tasks=sample_sparse_goals,
        make_vector_env=lambda num_envs, *, seed=0: PointRobotVectorEnv(
            num_envs, sparse=True, seed=seed
        ),
        max_episode_steps=HORIZON,
        auto_engine="serial",  # a NumPy batch: microseconds a step, nothing to split
        num_train_tasks=80,
        num_test_tasks=20,
        fixed_tasks=SPARSE_GOALS,
        task_parameter="goal",
        make_env=_make_sparse_env,
        encode_task=vector_encoder("goal", 2),
    )
)
