"""Collecting trajectories: one batched policy call per environment step."""

from __future__ import annotations

import time
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from metarl.action_scaling import with_unit_actions
from metarl.envs.parallel import ENGINE_OPTIONS, build_vector_env
from metarl.tasks import Task, TaskFamily, repeat_tasks
from metarl.trajectories import Trajectories
from metarl.vector_env import VectorTaskEnv


class Actor(Protocol):
    """What ``collect`` needs from a policy: a batched action for a batch of observations.

    ``act`` maps ``observations [B, O]`` (float32 tensor) to ``actions [B, A]``.  An actor that
    needs feedback (RL² feeds the previous reward and done flag back in) also defines
    ``observe_step(actions, rewards, terminated, truncated)``, called after every env step.
    """

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        ...


def collect(env: VectorTaskEnv, actor: Actor, *, reset_seed: int | None = None) -> Trajectories:
    """Run one episode in every sub-env of ``env`` and return them as ``Trajectories``.

    Sub-envs whose episode has ended are stepped no further in the record (their columns are
    masked); collection stops when every episode has ended or after ``env.max_episode_steps``.
    """
    observe_step: Callable[..., Any] | None = getattr(actor, "observe_step", None)
    horizon = env.max_episode_steps
    B = env.num_envs
    observations = np.zeros((horizon, B, env.observation_dim), dtype=np.float32)
    next_observations = np.zeros_like(observations)
    actions_record = np.zeros((horizon, B, env.action_dim), dtype=np.float32)
    rewards = np.zeros((horizon, B), dtype=np.float32)
    terminated = np.zeros((horizon, B), dtype=bool)
    truncated = np.zeros((horizon, B), dtype=bool)
    mask = np.zeros((horizon, B), dtype=np.float32)
    infos: dict[str, np.ndarray] = {}

    obs = env.reset(seed=reset_seed)
    active = np.ones(B, dtype=bool)
    num_steps = horizon
    with torch.no_grad():
        for t in range(horizon):
            actions = actor.act(torch.from_numpy(obs)).cpu().numpy()
            next_obs, reward, term, trunc, info = env.step(actions)
            observations[t] = obs
            actions_record[t] = actions
            next_observations[t] = next_obs
            rewards[t] = reward
            terminated[t] = term & active
            truncated[t] = trunc & active
            mask[t] = active
            for key, value in info.items():
                # Per-env scalars only ([B]): reward terms, success flags, distances.
                if np.shape(value) != (B,):
                    continue
                if key not in infos:
                    infos[key] = np.zeros((horizon, B), dtype=np.float32)
                infos[key][t] = value
            if observe_step is not None:
                observe_step(
                    torch.from_numpy(actions), torch.from_numpy(reward),
                    torch.from_numpy(term), torch.from_numpy(trunc),
                )
            active &= ~(term | trunc)
            obs = next_obs
            if not active.any():
                num_steps = t + 1
                break
    T = num_steps
    return Trajectories(
        observations=torch.from_numpy(observations[:T]),
        actions=torch.from_numpy(actions_record[:T]),
        rewards=torch.from_numpy(rewards[:T]),
        next_observations=torch.from_numpy(next_observations[:T]),
        terminated=torch.from_numpy(terminated[:T]),
        truncated=torch.from_numpy(truncated[:T]),
        mask=torch.from_numpy(mask[:T]),
        infos={k: torch.from_numpy(v[:T]) for k, v in infos.items()},
    )


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with ``num_threads`` torch intra-op threads, then restore the caller's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class EnvSpec:
    """What an agent needs to know of a family's envs before any is stepped."""

    observation_dim: int
    action_dim: int
    action_low: np.ndarray
    """``[action_dim]``: the box the policy acts in (``[-1, 1]`` with unit actions)."""
    action_high: np.ndarray
    max_episode_steps: int


class Sampler:
    """Owns the vector envs of one family and counts the environment steps taken.

    ``sample(tasks, actor, episodes_per_task)`` lays the tasks out task-major over
    ``len(tasks) * episodes_per_task`` sub-envs (an env of that size is built once and reused),
    and collects one episode in each.  With ``unit_actions`` (the default) policies act in
    ``[-1, 1]`` and a family's env whose action box is not ``±1`` rescales onto it
    (:mod:`metarl.action_scaling`).  Collection runs on one torch thread: the policy's forward
    passes are small, and the other cores are the environments' (the caller's thread count,
    used by the agents' updates, is restored afterwards).
    """

    def __init__(self, family: TaskFamily, *, seed: int, env_options: dict[str, Any] | None = None,
                 unit_actions: bool = True):
        self.family = family
        self.seed = seed
        self.env_options = dict(env_options or {})
        self.unit_actions = unit_actions
        self.env_steps = 0
        self.sample_seconds = 0.0
        self.num_resets = 0
        self._envs: dict[int, VectorTaskEnv] = {}
        self._spec: EnvSpec | None = None

    def describe(self) -> EnvSpec:
        """Dimensions, action box and horizon of this sampler's envs, read off a one-sub-env
        env built in this process with the family's serial engine and closed at once, so no
        worker process or Ray actor is kept for it under ``engine=processes``/``ray``."""
        if self._spec is None:
            options = {k: v for k, v in self.env_options.items() if k not in ENGINE_OPTIONS}
            env = build_vector_env(self.family, 1, seed=self.seed, engine="serial", **options)
            env = with_unit_actions(env) if self.unit_actions else env
            try:
                self._spec = EnvSpec(env.observation_dim, env.action_dim, env.action_low.copy(),
                                     env.action_high.copy(), env.max_episode_steps)
            finally:
                env.close()
        return self._spec

    def env(self, num_envs: int) -> VectorTaskEnv:
        if num_envs not in self._envs:
            env = build_vector_env(self.family, num_envs, seed=self.seed, **self.env_options)
            self._envs[num_envs] = with_unit_actions(env) if self.unit_actions else env
        return self._envs[num_envs]

    def sample(self, tasks: Sequence[Task], actor: Actor, *, episodes_per_task: int) -> Trajectories:
        start = time.perf_counter()
        env = self.env(len(tasks) * episodes_per_task)
        env.set_tasks(repeat_tasks(tasks, episodes_per_task))
        # Reset seeds are derived from a counter so a resumed run replays the same resets.
        reset_seed = self.seed * 1_000_003 + self.num_resets * 7_919
        self.num_resets += 1
        with torch_threads(1):
            trajectories = collect(env, actor, reset_seed=reset_seed)
        self.env_steps += int(trajectories.mask.sum().item())
        self.sample_seconds += time.perf_counter() - start
        return trajectories

    def restart(self) -> None:
        """Zero the counters (the envs stay built): the next samples replay from the start."""
        self.env_steps = 0
        self.num_resets = 0
        self.sample_seconds = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"env_steps": self.env_steps, "num_resets": self.num_resets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_steps = state["env_steps"]
        self.num_resets = state["num_resets"]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
