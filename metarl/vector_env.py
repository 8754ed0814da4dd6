"""The vectorised task environment: many sub-environments, each with its own task.

Every engine (the NumPy-native 2D navigation batch, the MuJoCo engines in ``metarl.envs``)
implements :class:`VectorTaskEnv`.  Arrays are batch-major ``[num_envs, ...]``; termination
(the MDP ended: no bootstrap) and truncation (time limit: bootstrap) are reported separately.
There is no autoreset: :func:`metarl.rollout.collect` resets explicitly at episode boundaries,
which avoids Gymnasium 1.x's next-step autoreset dummy step altogether.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import gymnasium as gym
import numpy as np

from metarl.tasks import MetaRLError, Task


@runtime_checkable
class VectorTaskEnv(Protocol):
    num_envs: int
    observation_dim: int
    action_dim: int
    action_low: np.ndarray
    """``[action_dim]`` lower bound of the action box (policies' samples are clipped to it)."""
    action_high: np.ndarray
    max_episode_steps: int

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Give sub-env ``i`` the task ``tasks[i]``; ``len(tasks)`` must equal ``num_envs``."""

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        """Reset every sub-env; returns observations ``[num_envs, observation_dim]``."""

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step with ``actions [num_envs, action_dim]``.

        Returns ``(observations, rewards, terminated, truncated, infos)`` with ``rewards``,
        ``terminated`` and ``truncated`` of shape ``[num_envs]`` and each ``infos`` entry an
        array with leading dimension ``num_envs`` (reward terms, ``success`` where defined).
        """

    def close(self) -> None:
        ...


RESET_SEED_STRIDE = 1_000_003
"""Seed offset between successive seedless ``reset()`` calls of one vector env."""


class ResetSeeds:
    """The base seed of each ``reset()`` of an engine; every engine seeds sub-env ``i`` with
    ``base + i``, so all engines give the same initial states for the same seeds."""

    def __init__(self, env_seed: int) -> None:
        self.env_seed = env_seed
        self.count = 0

    def next(self, seed: int | None = None) -> int:
        """``seed`` when given, else ``env_seed + RESET_SEED_STRIDE * (resets so far)``."""
        base = self.env_seed + RESET_SEED_STRIDE * self.count if seed is None else seed
        self.count += 1
        return base


def check_tasks(env: VectorTaskEnv, tasks: Sequence[Task]) -> None:
    if len(tasks) != env.num_envs:
        raise MetaRLError(
            f"set_tasks got {len(tasks)} tasks for {env.num_envs} sub-environments; "
            "pass exactly one task per sub-environment"
        )


def check_actions(env: VectorTaskEnv, actions: np.ndarray) -> np.ndarray:
    actions = np.asarray(actions)
    if actions.shape != (env.num_envs, env.action_dim):
        raise MetaRLError(
            f"step got actions of shape {actions.shape}; expected "
            f"({env.num_envs}, {env.action_dim}) = (num_envs, action_dim)"
        )
    return actions


class GymVectorTaskEnv:
    """Reference engine: a Python list of Gymnasium envs that each expose ``set_task(task)``.

    Simple and correct, used for correctness tests and for families without a faster engine.
    ``make_env`` is called once per sub-env; the env must not wrap itself in ``TimeLimit``:
    this class counts steps and reports truncation at ``max_episode_steps``.
    """

    def __init__(self, make_env: Any, num_envs: int, *, max_episode_steps: int, seed: int = 0):
        self.envs = [make_env() for _ in range(num_envs)]
        self.num_envs = num_envs
        space = self.envs[0].observation_space
        self.observation_dim = int(np.prod(space.shape))
        action_space = self.envs[0].action_space
        assert isinstance(action_space, gym.spaces.Box)
        self.action_dim = int(np.prod(action_space.shape))
        self.action_low = action_space.low.astype(np.float32)
        self.action_high = action_space.high.astype(np.float32)
        self.max_episode_steps = max_episode_steps
        self._reset_seeds = ResetSeeds(seed)
        self._elapsed = np.zeros(num_envs, dtype=np.int64)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        check_tasks(self, tasks)
        for env, task in zip(self.envs, tasks):
            env.unwrapped.set_task(task)

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        base = self._reset_seeds.next(seed)
        self._elapsed[:] = 0
        observations = [env.reset(seed=base + i)[0] for i, env in enumerate(self.envs)]
        return np.stack(observations).astype(np.float32)

    def step(self, actions: np.ndarray):
        actions = check_actions(self, actions)
        results = [env.step(a) for env, a in zip(self.envs, actions)]
        self._elapsed += 1
        observations = np.stack([r[0] for r in results]).astype(np.float32)
        rewards = np.array([r[1] for r in results], dtype=np.float32)
        terminated = np.array([r[2] for r in results], dtype=bool)
        truncated = (self._elapsed >= self.max_episode_steps) & ~terminated
        infos = stack_infos([r[4] for r in results])
        return observations, rewards, terminated, truncated, infos

    def close(self) -> None:
        for env in self.envs:
            env.close()


def stack_infos(infos: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Stack the numeric entries that every sub-env's ``info`` has into ``[num_envs]`` arrays."""
    if not infos:
        return {}
    keys = set(infos[0])
    for info in infos[1:]:
        keys &= set(info)
    stacked = {}
    for key in sorted(keys):
        values = [info[key] for info in infos]
        if all(np.isscalar(v) or isinstance(v, (np.ndarray, bool)) for v in values):
            stacked[key] = np.asarray(values)
    return stacked


def merge_infos(slices: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate the ``infos`` of consecutive slices of a batch, keeping the keys every slice
    has (slices of mixed task classes, e.g. Meta-World ML10, report different reward terms)."""
    keys = set(slices[0]).intersection(*slices[1:]) if slices else set()
    return {key: np.concatenate([infos[key] for infos in slices]) for key in sorted(keys)}
