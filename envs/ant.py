"""Ant task families on Gymnasium's ``Ant-v5``: target velocity, direction and goal.

Ctrl, contact and survive terms are Gymnasium v5's (``reward_ctrl = -0.5 ||a||^2``,
``reward_contact = -5e-4 ||clip(cfrc_ext, -1, 1)||^2``, ``reward_survive = 1`` while the torso z
is in ``[0.2, 1]``); ``v`` is the torso's velocity ``Δxy / dt``.

- ``AntVel`` (Finn et al., 2017, "Model-Agnostic Meta-Learning", sec. 5.3): ``-|v_x - v*| +
  survive - ctrl - contact``, ``v* ~ U[0, 3]``, early termination, resampled training tasks,
  40 test tasks, horizon 200.
- ``AntDir`` (Finn et al., 2017, sec. 5.3; PEARL's "Ant-Fwd-Back"): ``d v_x - ctrl - contact +
  survive`` with ``d in {-1, +1}``, early termination; the two tasks are train and test tasks.
- ``AntDir2D`` (Rakelly et al., 2019, PEARL's ``AntDirEnv(forward_backward=False)``): the same
  with the velocity projected on ``(cos θ, sin θ)``, ``θ ~ U[0, 2π)``, 100 train / 30 test.
- ``AntGoal`` (Rakelly et al., 2019, PEARL, "Ant-Goal-2D"): ``-||xy - g||_1 - ctrl - contact``,
  no survive term and no termination, ``g = 3 sqrt(u) (cos θ, sin θ)``, 150 train / 30 test.

Only the reward changes: observations are Gymnasium's (``qpos[2:]``, ``qvel``, clipped
``cfrc_ext[1:]``: 105 numbers) and never contain the task.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from metarl.envs.engine import ENGINES, BatchKernel, FieldGetter, load_model, mujoco_vector_env_factory
from metarl.envs.oracle import angle_encoder, scalar_encoder, vector_encoder
from metarl.envs.task_distributions import (
    DIRECTION_TASKS,
    SampleTasks,
    sample_angles,
    sample_directions,
    sample_velocities,
)
from metarl.tasks import MetaRLError, Task, TaskFamily, register_family

HORIZON = 200
OBJECTIVES = ("velocity", "direction", "angle", "goal")
DEFAULT_TASKS: dict[str, Task] = {
    "velocity": {"velocity": 1.0},
    "direction": {"direction": 1},
    "angle": {"angle": 0.0},
    "goal": {"goal": [3.0, 0.0]},
}
GOAL_RADIUS = 3.0
# Gymnasium Ant-v5 defaults, repeated here for the vectorised kernel.
CTRL_COST_WEIGHT = 0.5
CONTACT_COST_WEIGHT = 5e-4
CONTACT_FORCE_RANGE = (-1.0, 1.0)
HEALTHY_REWARD = 1.0
HEALTHY_Z_RANGE = (0.2, 1.0)
RESET_NOISE_SCALE = 0.1
TORSO_BODY = 1


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise MetaRLError(f"unknown Ant objective {objective!r}; accepted: {OBJECTIVES}")


def task_terms(
    objective: str,
    task_values: np.ndarray,
    x_velocity: np.ndarray,
    y_velocity: np.ndarray,
    xy_position: np.ndarray,
) -> tuple[str, np.ndarray]:
    """The task's reward term ``(name, [B])``; ``task_values`` is ``[B]`` (``[B, 2]`` for goal).

    Shared by the single env (batch of one) and the vectorised kernel.
    """
    if objective == "velocity":
        return "reward_velocity", -np.abs(x_velocity - task_values)
    if objective == "direction":
        return "reward_forward", task_values * x_velocity
    if objective == "angle":
        return "reward_forward", x_velocity * np.cos(task_values) + y_velocity * np.sin(task_values)
    return "reward_goal", -np.abs(xy_position - task_values).sum(axis=-1)


class AntTaskEnv(AntEnv):
    """``Ant-v5`` whose reward follows a task: ``{"velocity"}``, ``{"direction"}``, ``{"angle"}``
    or ``{"goal": [x, y]}`` (``objective`` names which).

    The task term (``reward_velocity``, ``reward_forward`` or ``reward_goal``) replaces v5's
    forward reward; ``reward_ctrl``, ``reward_contact`` and (except for goals)
    ``reward_survive`` are v5's.  The reward is the sum of the ``reward_*`` entries of ``info``.
    """

    def __init__(self, task: Task | None = None, *, objective: str = "velocity", **kwargs: Any):
        _check_objective(objective)
        # PEARL's ant-goal neither terminates nor pays for survival ("happy, not suicidal").
        terminate = objective != "goal"
        super().__init__(terminate_when_unhealthy=terminate, **kwargs)
        utils.EzPickle.__init__(self, task, objective=objective, **kwargs)
        self.objective = objective
        self.set_task(task if task is not None else DEFAULT_TASKS[objective])

    def set_task(self, task: Task) -> None:
        """Set the task; takes effect from the next step."""
        self.task = dict(task)

    def step(self, action: np.ndarray):
        observation, _, terminated, truncated, info = super().step(action)
        name, term = task_terms(
            self.objective,
            np.asarray(self.task[self.objective], dtype=np.float64),
            np.float64(info["x_velocity"]),
            np.float64(info["y_velocity"]),
            self.data.qpos[:2].copy(),
        )
        terms = {name: float(term), "reward_ctrl": info["reward_ctrl"], "reward_contact": info["reward_contact"]}
        if self.objective != "goal":
            terms["reward_survive"] = info["reward_survive"]
        info = {key: value for key, value in info.items() if not key.startswith("reward_")}
        info.update(terms)
        return observation, float(sum(terms.values())), terminated, truncated, info


class AntKernel(BatchKernel):
    """Vectorised :class:`AntTaskEnv` for :class:`~metarl.envs.engine.MujocoVectorEnv`."""

    frame_skip = 5
    reset_noise_scale = RESET_NOISE_SCALE
    gaussian_velocity_noise = True
    post_constraint = True

    def __init__(self, num_envs: int, *, objective: str) -> None:
        _check_objective(objective)
        super().__init__(load_model("ant.xml"), num_envs)
        self.objective = objective
        self.set_tasks([DEFAULT_TASKS[objective]] * num_envs)

    def fields(self) -> dict[str, FieldGetter]:
        return {
            "qpos": lambda data: data.qpos,
            "qvel": lambda data: data.qvel,
            "cfrc_ext": lambda data: data.cfrc_ext,
            "torso_xy": lambda data: data.xpos[TORSO_BODY, :2],
        }

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        self.task_values = np.array([task[self.objective] for task in tasks], dtype=np.float64)

    def observations(self, state: dict[str, np.ndarray]) -> np.ndarray:
        contact_forces = np.clip(state["cfrc_ext"][:, 1:], *CONTACT_FORCE_RANGE)
        return np.concatenate(
            [state["qpos"][:, 2:], state["qvel"], contact_forces.reshape(self.num_envs, -1)],
            axis=1,
        )

    def rewards(
        self, previous: dict[str, np.ndarray], state: dict[str, np.ndarray], actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        qpos = state["qpos"]
        velocity = (state["torso_xy"] - previous["torso_xy"]) / self.dt
        contact_forces = np.clip(state["cfrc_ext"], *CONTACT_FORCE_RANGE)
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(state["qvel"]).all(axis=1)
        healthy = finite & (HEALTHY_Z_RANGE[0] <= qpos[:, 2]) & (qpos[:, 2] <= HEALTHY_Z_RANGE[1])
        name, term = task_terms(
            self.objective, self.task_values, velocity[:, 0], velocity[:, 1], qpos[:, :2]
        )
        terms = {
            name: term,
            "reward_ctrl": -CTRL_COST_WEIGHT * np.square(actions).sum(axis=1),
            "reward_contact": -CONTACT_COST_WEIGHT
            * np.square(contact_forces).reshape(self.num_envs, -1).sum(axis=1),
        }
        if self.objective == "goal":
            terminated = np.zeros(self.num_envs, dtype=bool)
        else:
            terms["reward_survive"] = HEALTHY_REWARD * healthy
            terminated = ~healthy
        rewards = sum(terms.values())
        infos = {
            "x_position": qpos[:, 0].copy(),
            "y_position": qpos[:, 1].copy(),
            "x_velocity": velocity[:, 0],
            "y_velocity": velocity[:, 1],
            **terms,
        }
        return rewards, terminated, infos


def sample_goals_in_disc(min_radius: float, max_radius: float) -> SampleTasks:
    """Goals uniform in area on the ring ``min_radius <= |g| <= max_radius``.

    With ``min_radius = 0`` this is PEARL's ``g = 3 sqrt(u) (cos θ, sin θ)``.
    """

    def sample(rng: np.random.Generator, num_tasks: int) -> list[Task]:
        u = rng.uniform(0.0, 1.0, size=num_tasks)
        angles = rng.uniform(0.0, 2.0 * np.pi, size=num_tasks)
        radii = np.sqrt(min_radius**2 + u * (max_radius**2 - min_radius**2))
        goals = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return [{"goal": [float(x), float(y)]} for x, y in goals]

    return sample


def _make_vector_env(objective: str):
    return mujoco_vector_env_factory(
        partial(AntKernel, objective=objective), partial(AntTaskEnv, objective=objective), HORIZON
    )


ANT_VEL = register_family(
    TaskFamily(
        name="AntVel",
        description="Ant-v5 at a target forward velocity v* ~ U[0, 3], horizon 200",
        citation="Finn, Abbeel & Levine (2017), Model-Agnostic Meta-Learning, sec. 5.3",
        sample_tasks=sample_velocities(0.0, 3.0),
        make_vector_env=_make_vector_env("velocity"),
        engines=ENGINES,
        auto_engine="auto",
        max_episode_steps=HORIZON,
        num_train_tasks=None,
        num_test_tasks=40,
        task_parameter="velocity",
        sample_ood_tasks=sample_velocities(3.0, 4.0),
        make_env=partial(AntTaskEnv, objective="velocity"),
        encode_task=scalar_encoder("velocity"),
    )
)

ANT_DIR = register_family(
    TaskFamily(
        name="AntDir",
        description="Ant-v5 running forward (d=+1) or backward (d=-1), horizon 200",
        citation=(
            "Finn, Abbeel & Levine (2017), Model-Agnostic Meta-Learning, sec. 5.3; "
            "Rakelly et al. (2019), PEARL, Ant-Fwd-Back"
        ),
        sample_tasks=sample_directions,
        make_vector_env=_make_vector_env("direction"),
        engines=ENGINES,
        auto_engine="auto",
        max_episode_steps=HORIZON,
        num_train_tasks=2,
        num_test_tasks=2,
        fixed_tasks=DIRECTION_TASKS,
        test_equals_train=True,
        task_parameter="direction",
        make_env=partial(AntTaskEnv, objective="direction"),
        encode_task=scalar_encoder("direction"),
    )
)

ANT_DIR_2D = register_family(
    TaskFamily(
        name="AntDir2D",
        description="Ant-v5 running along an angle θ ~ U[0, 2π), 100/30 tasks, horizon 200",
        citation="Rakelly et al. (2019), PEARL code, AntDirEnv(forward_backward=False)",
        sample_tasks=sample_angles,
        make_vector_env=_make_vector_env("angle"),
        engines=ENGINES,
        auto_engine="auto",
        max_episode_steps=HORIZON,
        num_train_tasks=100,
        num_test_tasks=30,
        task_parameter="angle",
        make_env=partial(AntTaskEnv, objective="angle"),
        encode_task=angle_encoder("angle"),
    )

)

ANT_GOAL = register_family(
    TaskFamily(
        name="AntGoal",
        description="Ant-v5 to a goal uniform in the disc of radius 3, 150/30 tasks, horizon 200",
        citation="Rakelly et al. (2019), PEARL, Ant-Goal-2D",
        sample_tasks=sample_goals_in_disc(0.0, GOAL_RADIUS),
        make_vector_env=_make_vector_env("goal"),
        engines=ENGINES,
        auto_engine="auto",
        max_episode_steps=HORIZON,
        num_train_tasks=150,
        num_test_tasks=30,
        task_parameter="goal",
        sample_ood_tasks=sample_goals_in_disc(GOAL_RADIUS, 4.0),
        make_env=partial(AntTaskEnv, objective="goal"),
        encode_task=vector_encoder("goal", 2),
    )
)
