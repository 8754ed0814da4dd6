"""Policies act in ``[-1, 1]``: the vector env of a family whose action box is not ``±1`` is
wrapped so that it takes unit actions, clips them and rescales them onto its own box.

This is Gymnasium's ``ClipAction`` + ``RescaleAction`` for a whole batch, and what the papers'
reference code does to every env (rllab's ``normalize`` in MAML's ``cbfinn/maml_rl``, rlkit's
``NormalizedBoxEnv`` in PEARL).  With it, a policy's initial std, a policy-gradient step size and
the log-probabilities of actions mean what the papers mean whatever the family's units: MAML's
2D navigation acts in ``[-0.1, 0.1]^2``, where an initial std of 1.0 in the unit space is 0.1 in
env units.  Recorded actions (``Trajectories.actions``) are the policy's, in the unit box.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metarl.tasks import Task
from metarl.vector_env import VectorTaskEnv, check_actions


def is_unit_box(low: np.ndarray, high: np.ndarray) -> bool:
    """True when the box is ``[-1, 1]`` in every dimension (nothing to rescale)."""
    return bool(np.all(np.asarray(low) == -1.0) and np.all(np.asarray(high) == 1.0))


class UnitToBox:
    """``a ↦ low + (clip(a, -1, 1) + 1) / 2 · (high - low)``, row by row (a plain object, so
    that workers running episodes get it too)."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low, self.high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        unit = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return (self.low + (unit + 1.0) * 0.5 * (self.high - self.low)).astype(np.float32)


class UnitActionVectorEnv:
    """A :class:`~metarl.vector_env.VectorTaskEnv` acting in ``[-1, 1]^A`` on top of ``env``:
    ``a ↦ low + (clip(a, -1, 1) + 1) / 2 · (high - low)``, everything else passed through."""

    def __init__(self, env: VectorTaskEnv) -> None:
        low = np.asarray(env.action_low, dtype=np.float64)
        high = np.asarray(env.action_high, dtype=np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise ValueError(f"cannot rescale onto an unbounded or empty action box [{low}, {high}]")
        self.env = env
        self.num_envs = env.num_envs
        self.observation_dim = env.observation_dim
        self.action_dim = env.action_dim
        self.max_episode_steps = env.max_episode_steps
        self.action_low = np.full(env.action_dim, -1.0, dtype=np.float32)
        self.action_high = np.full(env.action_dim, 1.0, dtype=np.float32)
        self.env_action_low, self.env_action_high = low, high
        """The inner env's box, in its own units."""
        self.to_env_units = UnitToBox(low, high)
        """Unit actions ``[num_envs, A]`` -> actions in the inner env's box (clipped first)."""

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        self.env.set_tasks(tasks)

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        return self.env.reset(seed=seed)

    def step(self, actions: np.ndarray):
        return self.env.step(self.to_env_units(check_actions(self, actions)))

    def collect_remote(self, actor, *, reset_seed: int | None = None):
        """The inner env's episodes on its workers, with this box's rescaling (see
        :func:`metarl.rollout.collect`); ``None`` where the inner env steps locally."""
        remote = getattr(self.env, "collect_remote", None)
        if remote is None:
            return None
        return remote(actor, reset_seed=reset_seed, to_env_units=self.to_env_units)

    def close(self) -> None:
        self.env.close()


def with_unit_actions(env: VectorTaskEnv) -> VectorTaskEnv:
    """``env`` acting in ``[-1, 1]``: wrapped when its box is bounded and not already ``±1``;
    an unbounded box (no scale to rescale to) is left as it is."""
    low, high = np.asarray(env.action_low), np.asarray(env.action_high)
    if is_unit_box(low, high) or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return env
    return UnitActionVectorEnv(env)
