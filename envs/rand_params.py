"""Dynamics task families: Hopper and Walker2D with randomised physical parameters
(Rakelly et al., 2019, PEARL, "Walker-2D-Params"; the ``rand_param_envs`` of Rothfuss et al.,
2019, ProMP).

A task is a set of per-element multipliers of the model's defaults:
``{"body_mass": [nbody], "body_inertia": [nbody][3], "geom_friction": [ngeom][3],
"dof_damping": [nv]}`` with mass, inertia and friction multipliers ``1.5^U(-3, 3)`` and damping
multipliers ``1.3^U(-3, 3)``.  Setting a task restores the original arrays, multiplies them in,
and calls ``mujoco.mj_setConst`` so derived quantities (``body_subtreemass``, ``dof_invweight0``,
...) follow.  The reward is Gymnasium v5's, unchanged: ``reward_forward = v_x``,
``reward_survive = 1`` while healthy, ``reward_ctrl = -1e-3 ||a||^2``, with v5's termination.
40 train / 10 test tasks, horizon 200.
"""

from __future__ import annotations

from functools import cache, partial
from typing import Any, Sequence

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from metarl.envs.engine import ENGINES, BatchKernel, FieldGetter, load_model, mujoco_vector_env_factory
from metarl.envs.oracle import TaskEncoder
from metarl.tasks import MetaRLError, Task, TaskFamily, register_family

HORIZON = 200
LOG_SCALE_RANGE = 3.0
PARAMETER_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "geom_friction": 1.5, "dof_damping": 1.3}
"""Multiplier ``base^U(-3, 3)`` per parameter array, as in ``rand_param_envs``."""
PARAMETER_NAMES = tuple(PARAMETER_BASES)
XML_FILES = {"hopper": "hopper.xml", "walker2d": "walker2d_v5.xml"}
# Gymnasium Hopper-v5 / Walker2d-v5 defaults, repeated here for the vectorised kernel.
CTRL_COST_WEIGHT = 1e-3
HEALTHY_REWARD = 1.0
RESET_NOISE_SCALE = 5e-3
VELOCITY_CLIP = 10.0
FRAME_SKIP = 4


def default_parameters(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    """Copies of the model's original parameter arrays, restored before every task."""
    return {name: getattr(model, name).copy() for name in PARAMETER_NAMES}


@cache
def parameter_shapes(robot: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the randomised arrays of ``robot`` (``"hopper"`` or ``"walker2d"``)."""
    model = load_model(XML_FILES[robot])
    return {name: getattr(model, name).shape for name in PARAMETER_NAMES}


def default_task(robot: str) -> Task:
    """The task whose multipliers are all 1: the unmodified model."""
    return {name: np.ones(shape).tolist() for name, shape in parameter_shapes(robot).items()}


def sample_parameter_tasks(robot: str):
    """A ``sample_tasks(rng, num_tasks)`` drawing per-element multipliers ``base^U(-3, 3)``."""

    def sample(rng: np.random.Generator, num_tasks: int) -> list[Task]:
        shapes = parameter_shapes(robot)
        tasks = []
        for _ in range(num_tasks):
            task = {}
            for name, shape in shapes.items():
                exponents = rng.uniform(-LOG_SCALE_RANGE, LOG_SCALE_RANGE, size=shape)
                task[name] = (PARAMETER_BASES[name] ** exponents).tolist()
            tasks.append(task)
        return tasks

    return sample


def apply_parameters(
    model: mujoco.MjModel, data: mujoco.MjData, defaults: dict[str, np.ndarray], task: Task
) -> None:
    """Write ``defaults * task multipliers`` into ``model`` and recompute its derived constants.

    Always starts from ``defaults``, so setting the all-ones task restores the model exactly.
    ``mj_setConst`` uses ``data`` as scratch space: reset the env afterwards.
    """
    for name in PARAMETER_NAMES:
        multipliers = np.asarray(task[name], dtype=np.float64)
        if multipliers.shape != defaults[name].shape:
            raise MetaRLError(
                f"task {name} has shape {multipliers.shape}; expected {defaults[name].shape}"
            )
        getattr(model, name)[:] = defaults[name] * multipliers
    mujoco.mj_setConst(model, data)


def parameter_encoder(robot: str) -> TaskEncoder:
    """Oracle encoding: the log-multipliers of every parameter, flattened."""
    dim = sum(int(np.prod(shape)) for shape in parameter_shapes(robot).values())
    return TaskEncoder(
        dim=dim,
        encode=lambda task: np.concatenate(
            [np.log(np.asarray(task[name], dtype=np.float64)).ravel() for name in PARAMETER_NAMES]
        ),
    )


class RandParamsMixin:
    """``set_task`` for a Gymnasium MuJoCo env: writes multipliers into ``self.model``."""

    model: mujoco.MjModel
    data: mujoco.MjData

    def _init_parameters(self, robot: str, task: Task | None) -> None:
        self.robot = robot
        self._defaults = default_parameters(self.model)
        self.set_task(task if task is not None else default_task(robot))

    def set_task(self, task: Task) -> None:
        """Set the dynamics; call ``reset()`` afterwards (``mj_setConst`` uses the data)."""
        self.task = {name: task[name] for name in PARAMETER_NAMES}
        apply_parameters(self.model, self.data, self._defaults, self.task)


class HopperRandParamsEnv(RandParamsMixin, HopperEnv):
    """``Hopper-v5`` with task-set body mass, inertia, geom friction and dof damping."""

    def __init__(self, task: Task | None = None, **kwargs: Any):
        HopperEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, task, **kwargs)
        self._init_parameters("hopper", task)


class Walker2DRandParamsEnv(RandParamsMixin, Walker2dEnv):
    """``Walker2d-v5`` with task-set body mass, inertia, geom friction and dof damping."""

    def __init__(self, task: Task | None = None, **kwargs: Any):
        Walker2dEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, task, **kwargs)
        self._init_parameters("walker2d", task)


class RandParamsKernel(BatchKernel):
    """Vectorised Hopper-v5 / Walker2d-v5 with per-sub-env models for the dynamics tasks."""

    frame_skip = FRAME_SKIP
    reset_noise_scale = RESET_NOISE_SCALE
    dynamics_tasks = True

    def __init__(self, num_envs: int, *, robot: str) -> None:
        super().__init__(load_model(XML_FILES[robot]), num_envs)
        self.robot = robot
        self.defaults = default_parameters(self.model)

    def fields(self) -> dict[str, FieldGetter]:
        return {"qpos": lambda data: data.qpos, "qvel": lambda data: data.qvel}

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Tasks live in the per-sub-env models (:meth:`apply_task`); nothing to keep here."""

    def apply_task(self, model: mujoco.MjModel, data: mujoco.MjData, task: Task) -> None:
        apply_parameters(model, data, self.defaults, task)

    def observations(self, state: dict[str, np.ndarray]) -> np.ndarray:
        velocities = np.clip(state["qvel"], -VELOCITY_CLIP, VELOCITY_CLIP)
        return np.concatenate([state["qpos"][:, 1:], velocities], axis=1)

    def _healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """v5's ``is_healthy`` over the batch ``[B]``."""
        z, angle = qpos[:, 1], qpos[:, 2]
        if self.robot == "hopper":
            state = np.concatenate([qpos, qvel], axis=1)[:, 2:]
            return (
                ((-100.0 < state) & (state < 100.0)).all(axis=1)
                & (0.7 < z)
                & (z < np.inf)
                & (-0.2 < angle)
                & (angle < 0.2)
            )
        return (0.8 < z) & (z < 2.0) & (-1.0 < angle) & (angle < 1.0)

    def rewards(
        self, previous: dict[str, np.ndarray], state: dict[str, np.ndarray], actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        x_velocity = (state["qpos"][:, 0] - previous["qpos"][:, 0]) / self.dt
        healthy = self._healthy(state["qpos"], state["qvel"])
        terms = {
            "reward_forward": x_velocity,
            "reward_ctrl": -CTRL_COST_WEIGHT * np.square(actions).sum(axis=1),
            "reward_survive": HEALTHY_REWARD * healthy,
        }
        infos = {"x_position": state["qpos"][:, 0].copy(), "x_velocity": x_velocity, **terms}
        return terms["reward_forward"] + terms["reward_survive"] + terms["reward_ctrl"], ~healthy, infos


def _register(name: str, robot: str, env_class: type, citation: str) -> TaskFamily:
    return register_family(
        TaskFamily(
            name=name,
            description=(
                f"{robot} with body mass, inertia, friction x 1.5^U(-3,3) and damping "
                "x 1.3^U(-3,3), 40/10 tasks, horizon 200"
            ),
            citation=citation,
            sample_tasks=sample_parameter_tasks(robot),
            make_vector_env=mujoco_vector_env_factory(
                partial(RandParamsKernel, robot=robot), env_class, HORIZON
            ),
            engines=ENGINES,
            auto_engine="auto",
            max_episode_steps=HORIZON,
            num_train_tasks=40,
            num_test_tasks=10,
            make_env=env_class,
            encode_task=parameter_encoder(robot),
        )
    )



HOPPER_RAND_PARAMS = _register(
    "HopperRandParams",
    "hopper",
    HopperRandParamsEnv,
    "Rothfuss et al. (2019), ProMP, rand_param_envs Hopper; Rakelly et al. (2019), PEARL",
)
WALKER2D_RAND_PARAMS = _register(
    "Walker2DRandParams",
    "walker2d",
    Walker2DRandParamsEnv,
    "Rakelly et al. (2019), PEARL, Walker-2D-Params (rand_param_envs of ProMP)",
)
