"""HalfCheetah task families on Gymnasium's ``HalfCheetah-v5``: target velocity and direction.

- ``HalfCheetahVel-MAML`` (Finn et al., 2017, "Model-Agnostic Meta-Learning", sec. 5.3): reward
  ``-|v - v*| - 0.05 ||a||^2`` with ``v* ~ U[0, 2]``, training tasks resampled every iteration,
  40 test tasks, horizon 200.
- ``HalfCheetahVel-PEARL`` (Rakelly et al., 2019, PEARL, "Half-Cheetah-Vel"): the same reward
  with ``v* ~ U[0, 3]``, 100 train / 30 test tasks, horizon 200.
- ``HalfCheetahDir`` (Finn et al., 2017, sec. 5.3; PEARL's "Half-Cheetah-Fwd-Back"): reward
  ``d * v - 0.05 ||a||^2`` with ``d in {-1, +1}``, the two tasks are both train and test tasks.

``v`` is the forward velocity of the root (``Δx / dt``, Gymnasium's ``x_velocity``).  Only the
reward changes: observations are Gymnasium's (``qpos[1:]`` and ``qvel``, 17 numbers).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metarl.envs.engine import ENGINES, BatchKernel, FieldGetter, load_model, mujoco_vector_env_factory
from metarl.envs.oracle import scalar_encoder
from metarl.envs.task_distributions import DIRECTION_TASKS, sample_directions, sample_velocities
from metarl.tasks import MetaRLError, Task, TaskFamily, register_family

HORIZON = 200
CTRL_COST_WEIGHT = 0.05
"""``0.05 ||a||^2`` in MAML's and PEARL's HalfCheetah tasks (Gymnasium's default is 0.1)."""
RESET_NOISE_SCALE = 0.1
OBJECTIVES = ("velocity", "direction")
DEFAULT_TASKS: dict[str, Task] = {"velocity": {"velocity": 1.0}, "direction": {"direction": 1}}


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise MetaRLError(f"unknown HalfCheetah objective {objective!r}; accepted: {OBJECTIVES}")


class HalfCheetahTaskEnv(HalfCheetahEnv):
    """``HalfCheetah-v5`` whose reward follows a task ``{"velocity": v*}`` or ``{"direction": d}``.

    ``objective="velocity"``: ``reward_velocity = -|x_velocity - v*|``; ``"direction"``:
    ``reward_forward = d * x_velocity``; both add ``reward_ctrl = -0.05 ||a||^2``.  Every term is
    in ``info``; the task never enters the observation.
    """

    def __init__(self, task: Task | None = None, *, objective: str = "velocity", **kwargs: Any):
        _check_objective(objective)
        super().__init__(ctrl_cost_weight=CTRL_COST_WEIGHT, **kwargs)
        utils.EzPickle.__init__(self, task, objective=objective, **kwargs)
        self.objective = objective
        self.set_task(task if task is not None else DEFAULT_TASKS[objective])

    def set_task(self, task: Task) -> None:
        """Set the target velocity or direction; takes effect from the next step."""
        self.task = dict(task)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        reward_ctrl = -self.control_cost(action)
        if self.objective == "velocity":
            term_name, term = "reward_velocity", -abs(x_velocity - self.task["velocity"])
        else:
            term_name, term = "reward_forward", self.task["direction"] * x_velocity
        return term + reward_ctrl, {term_name: term, "reward_ctrl": reward_ctrl}


class HalfCheetahKernel(BatchKernel):
    """Vectorised :class:`HalfCheetahTaskEnv` for :class:`~metarl.envs.engine.MujocoVectorEnv`."""

    frame_skip = 5
    reset_noise_scale = RESET_NOISE_SCALE
    gaussian_velocity_noise = True

    def __init__(self, num_envs: int, *, objective: str) -> None:
        _check_objective(objective)
        super().__init__(load_model("half_cheetah.xml"), num_envs)
        self.objective = objective
        self.targets = np.full(num_envs, DEFAULT_TASKS[objective][objective], dtype=np.float64)

    def fields(self) -> dict[str, FieldGetter]:
        return {"qpos": lambda data: data.qpos, "qvel": lambda data: data.qvel}

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        self.targets = np.array([task[self.objective] for task in tasks], dtype=np.float64)

    def observations(self, state: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([state["qpos"][:, 1:], state["qvel"]], axis=1)

    def rewards(
        self, previous: dict[str, np.ndarray], state: dict[str, np.ndarray], actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        x_velocity = (state["qpos"][:, 0] - previous["qpos"][:, 0]) / self.dt
        reward_ctrl = -CTRL_COST_WEIGHT * np.square(actions).sum(axis=1)
        if self.objective == "velocity":
            term_name, term = "reward_velocity", -np.abs(x_velocity - self.targets)
        else:
            term_name, term = "reward_forward", self.targets * x_velocity
        infos = {
            "x_position": state["qpos"][:, 0].copy(),
            "x_velocity": x_velocity,
            term_name: term,
            "reward_ctrl": reward_ctrl,
        }
        return term + reward_ctrl, np.zeros(self.num_envs, dtype=bool), infos


def _make_vector_env(objective: str):
    return mujoco_vector_env_factory(
        partial(HalfCheetahKernel, objective=objective),
        partial(HalfCheetahTaskEnv, objective=objective),
        HORIZON,
    )


HALF_CHEETAH_VEL_MAML = register_family(
    TaskFamily(
        name="HalfCheetahVel-MAML",
        description="HalfCheetah-v5 at a target velocity v* ~ U[0, 2], horizon 200",
        citation="Finn, Abbeel & Levine (2017), Model-Agnostic Meta-Learning, sec. 5.3",
        sample_tasks=sample_velocities(0.0, 2.0),
        make_vector_env=_make_vector_env("velocity"),
        engines=ENGINES,
        auto_engine="auto",
        max_episode_steps=HORIZON,
        num_train_tasks=None,
        num_test_tasks=40,
        task_parameter="velocity",
        sample_ood_tasks=sample_velocities(2.0, 3.0),
        make_env=partial(HalfCheetahTaskEnv, objective="velocity"),
        encode_task=scalar_encoder("velocity"),
    )
)

HALF_CHEETAH_VEL_PEARL = register_family(
    TaskFamily(
        name="HalfCheetahVel-PEARL",
        description="HalfCheetah-v5 at a target velocity v* ~ U[0, 3], 100/30 tasks, horizon 200",
        citation="Rakelly et al. (2019), PEARL, Half-Cheetah-Vel",
        sample_tasks=sample_velocities(0.0, 3.0),
        make_vector_env=_make_vector_env("velocity"),
        engines=ENGINES,
        auto_engine="auto",
        max_episode_steps=HORIZON,
        num_train_tasks=100,
        num_test_tasks=30,
        task_parameter="velocity",
        sample_ood_tasks=sample_velocities(3.0, 4.0),
        make_env=partial(HalfCheetahTaskEnv, objective="velocity"),
        encode_task=scalar_encoder("velocity"),
    )
)

HALF_CHEETAH_DIR = register_family(
    TaskFamily(
        name="HalfCheetahDir",
        description="HalfCheetah-v5 running forward (d=+1) or backward (d=-1), horizon 200",
        citation=(
            "Finn, Abbeel & Levine (2017), Model-Agnostic Meta-Learning, sec. 5.3; "
            "Rakelly et al. (2019), PEARL, Half-Cheetah-Fwd-Back"
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
        make_env=partial(HalfCheetahTaskEnv, objective="direction"),
        encode_task=scalar_encoder("direction"),
    )
)
