"""HumanoidDir on Gymnasium's ``Humanoid-v5`` (Rakelly et al., 2019, PEARL, "Humanoid-Dir").

The humanoid is rewarded for moving its centre of mass along a direction ``θ ~ U[0, 2π)``:
``reward_forward = 1.25 (v_x cos θ + v_y sin θ)``, plus v5's ``reward_survive = 5`` while the
torso z is in ``(1, 2)``, ``reward_ctrl = -0.1 ||a||^2`` and ``reward_contact =
-min(5e-7 ||cfrc_ext||^2, 10)``; the episode terminates when the torso z leaves ``(1, 2)``.
100 train / 30 test tasks, horizon 200.  Observations are v5's 348 numbers; no task in them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

from metarl.envs.engine import ENGINES, BatchKernel, FieldGetter, load_model, mujoco_vector_env_factory
from metarl.envs.oracle import angle_encoder
from metarl.envs.task_distributions import sample_angles
from metarl.tasks import Task, TaskFamily, register_family

HORIZON = 200
# Gymnasium Humanoid-v5 defaults, repeated here for the vectorised kernel.
FORWARD_REWARD_WEIGHT = 1.25
CTRL_COST_WEIGHT = 0.1
CONTACT_COST_WEIGHT = 5e-7
CONTACT_COST_MAX = 10.0
HEALTHY_REWARD = 5.0
HEALTHY_Z_RANGE = (1.0, 2.0)
RESET_NOISE_SCALE = 1e-2


class HumanoidDirEnv(HumanoidEnv):
    """``Humanoid-v5`` rewarded for centre-of-mass velocity along ``task["angle"]``.

    Only ``reward_forward`` changes (the projection of v5's ``(x_velocity, y_velocity)`` on
    ``(cos θ, sin θ)``, times v5's weight 1.25); the reward is the sum of ``info``'s
    ``reward_*`` entries.
    """

    def __init__(self, task: Task | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, task, **kwargs)
        self.set_task(task if task is not None else {"angle": 0.0})

    def set_task(self, task: Task) -> None:
        """Set the direction angle; takes effect from the next step."""
        self.task = dict(task)

    def step(self, action: np.ndarray):
        observation, _, terminated, truncated, info = super().step(action)
        angle = self.task["angle"]
        info["reward_forward"] = self._forward_reward_weight * (
            info["x_velocity"] * np.cos(angle) + info["y_velocity"] * np.sin(angle)
        )
        reward = (
            info["reward_forward"] + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        )
        return observation, float(reward), terminated, truncated, info


class HumanoidDirKernel(BatchKernel):
    """Vectorised :class:`HumanoidDirEnv` for :class:`~metarl.envs.engine.MujocoVectorEnv`."""

    frame_skip = 5
    reset_noise_scale = RESET_NOISE_SCALE
    post_constraint = True

    def __init__(self, num_envs: int) -> None:
        super().__init__(load_model("humanoid.xml"), num_envs)
        self.angles = np.zeros(num_envs)
        self.body_mass = self.model.body_mass.copy()

    def fields(self) -> dict[str, FieldGetter]:
        return {
            "qpos": lambda data: data.qpos,
            "qvel": lambda data: data.qvel,
            "cinert": lambda data: data.cinert[1:],
            "cvel": lambda data: data.cvel[1:],
            "qfrc_actuator": lambda data: data.qfrc_actuator[6:],
            "cfrc_ext": lambda data: data.cfrc_ext,
            "xipos": lambda data: data.xipos,
        }

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        self.angles = np.array([task["angle"] for task in tasks], dtype=np.float64)

    def observations(self, state: dict[str, np.ndarray]) -> np.ndarray:
        batch = self.num_envs
        return np.concatenate(
            [
                state["qpos"][:, 2:],
                state["qvel"],
                state["cinert"].reshape(batch, -1),
                state["cvel"].reshape(batch, -1),
                state["qfrc_actuator"],
                state["cfrc_ext"][:, 1:].reshape(batch, -1),
            ],
            axis=1,
        )

    def _mass_center(self, xipos: np.ndarray) -> np.ndarray:
        """``[B, 2]`` xy of the centre of mass from body positions ``xipos [B, nbody, 3]``."""
        weighted = (self.body_mass[None, :, None] * xipos).sum(axis=1) / self.body_mass.sum()
        return weighted[:, :2]

    def rewards(
        self, previous: dict[str, np.ndarray], state: dict[str, np.ndarray], actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        velocity = (self._mass_center(state["xipos"]) - self._mass_center(previous["xipos"])) / self.dt
        z = state["qpos"][:, 2]
        healthy = (HEALTHY_Z_RANGE[0] < z) & (z < HEALTHY_Z_RANGE[1])
        contact = CONTACT_COST_WEIGHT * np.square(state["cfrc_ext"]).reshape(self.num_envs, -1).sum(axis=1)
        terms = {
            "reward_forward": FORWARD_REWARD_WEIGHT
            * (velocity[:, 0] * np.cos(self.angles) + velocity[:, 1] * np.sin(self.angles)),
            "reward_survive": HEALTHY_REWARD * healthy,
            "reward_ctrl": -CTRL_COST_WEIGHT * np.square(actions).sum(axis=1),
            "reward_contact": -np.minimum(contact, CONTACT_COST_MAX),
        }
        infos = {
            "x_position": state["qpos"][:, 0].copy(),
            "y_position": state["qpos"][:, 1].copy(),
            "x_velocity": velocity[:, 0],
            "y_velocity": velocity[:, 1],
            **terms,
        }
        return sum(terms.values()), ~healthy, infos


HUMANOID_DIR = register_family(
    TaskFamily(
        name="HumanoidDir",
        description="Humanoid-v5 moving along an angle θ ~ U[0, 2π), 100/30 tasks, horizon 200",
        citation="Rakelly et al. (2019), PEARL, Humanoid-Dir",
        sample_tasks=sample_angles,
        make_vector_env=mujoco_vector_env_factory(HumanoidDirKernel, HumanoidDirEnv, HORIZON),
        engines=ENGINES,
        auto_engine="auto",
        max_episode_steps=HORIZON,
        num_train_tasks=100,
        num_test_tasks=30,
        task_parameter="angle",
        make_env=HumanoidDirEnv,
        encode_task=angle_encoder("angle"),
    )

)
