"""2D navigation (Finn et al., 2017, "Model-Agnostic Meta-Learning", section 5.2).

A point starts at the origin and moves by its (clipped) action; the reward is the negative
Euclidean distance to the goal; the episode terminates when both coordinates are within 0.01
of the goal; horizon 100.  Goals are drawn from U[-0.5, 0.5]^2, and the MAML paper resamples
training goals every iteration and tests on 40 goals.

The whole batch is stepped in NumPy, so thousands of environments step in microseconds.
"""

from __future__ import annotations

import numpy as np

from metarl.envs.oracle import vector_encoder
from metarl.tasks import Task, TaskFamily, register_family
from metarl.envs.point_mass import PointMassBatch, PointMassEnv

ACTION_BOUND = 0.1
GOAL_LOW, GOAL_HIGH = -0.5, 0.5
GOAL_TOLERANCE = 0.01
HORIZON = 100


def sample_goals(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    goals = rng.uniform(GOAL_LOW, GOAL_HIGH, size=(num_tasks, 2))
    return [{"goal": [float(x), float(y)]} for x, y in goals]


def sample_ood_goals(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    """Goals in the ring 0.5 < |g|_inf <= 1, outside the training square."""
    goals = []
    while len(goals) < num_tasks:
        g = rng.uniform(-1.0, 1.0, size=2)
        if np.max(np.abs(g)) > GOAL_HIGH:
            goals.append({"goal": [float(g[0]), float(g[1])]})
    return goals


class NavigationVectorEnv(PointMassBatch):
    """A batch of 2D navigation environments, each with its own goal, stepped in NumPy.

    Implements :class:`metarl.vector_env.VectorTaskEnv`.  Observations are the positions
    ``[num_envs, 2]``; the goal is never observed.
    """

    def __init__(self, num_envs: int, *, seed: int = 0, max_episode_steps: int = HORIZON):
        super().__init__(num_envs, action_bound=ACTION_BOUND, max_episode_steps=max_episode_steps,
                         dtype=np.float32)

    def step(self, actions: np.ndarray):
        self._move(actions)
        delta = self.positions - self.goals
        distance = np.sqrt((delta**2).sum(axis=1))
        rewards = -distance
        terminated = (np.abs(delta) < GOAL_TOLERANCE).all(axis=1)
        truncated = np.full(self.num_envs, self._elapsed >= self.max_episode_steps) & ~terminated
        infos = {"reward_distance": rewards.copy(), "distance": distance}
        return self.positions.copy(), rewards.astype(np.float32), terminated, truncated, infos


class NavigationEnv(PointMassEnv):
    """Single-environment Gymnasium view of 2D navigation (for ``check_env`` and users)."""

    def __init__(self, task: Task | None = None):
        super().__init__(NavigationVectorEnv(1), task or {"goal": [0.0, 0.0]})


NAVIGATION = register_family(
    TaskFamily(
        name="Navigation2D",
        description="point mass to a goal in U[-0.5,0.5]^2, reward -distance, horizon 100",
        citation="Finn, Abbeel & Levine (2017), Model-Agnostic Meta-Learning, sec. 5.2",
        sample_tasks=sample_goals,
        make_vector_env=lambda num_envs, *, seed=0: NavigationVectorEnv(num_envs, seed=seed),
        max_episode_steps=HORIZON,
        auto_engine="serial",  # a NumPy batch: microseconds a step, nothing to split
        num_test_tasks=40,
        num_train_tasks=None,
        task_parameter="goal",
        sample_ood_tasks=sample_ood_goals,
        make_env=NavigationEnv,
        encode_task=vector_encoder("goal", 2),
    )
)
