"""Collecting trajectories: one batched policy call per environment step.

Locally (:func:`collect`) the driver calls the policy, then steps the vector env.  An engine
whose workers can hold a copy of the policy (``env_options.engine=ray``) may instead run the
whole episode where its sub-envs live (:class:`SliceRollout`), one call per episode and worker
instead of one per step; the driver then *follows* the episode (:func:`follow`): it feeds the
returned observations to its own actor, so the actor's state (RL²'s memory, the generator's
draws) ends where a local collection leaves it, and checks that it picks the same actions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from metarl.action_scaling import with_unit_actions
from metarl.envs.parallel import ENGINE_OPTIONS, build_vector_env
from metarl.tasks import MetaRLError, Task, TaskFamily, repeat_tasks
from metarl.trajectories import Trajectories
from metarl.vector_env import VectorTaskEnv


class Actor(Protocol):
    """What ``collect`` needs from a policy: a batched action for a batch of observations.

    ``act`` maps ``observations [B, O]`` (float32 tensor) to ``actions [B, A]``.  An actor that
    needs feedback (RL² feeds the previous reward and done flag back in) also defines
    ``observe_step(actions, rewards, terminated, truncated)``, called after every env step.
    Row ``b`` of the actions may depend on row ``b`` of what the actor was given (now and
    before) and on the actor's random draws, never on other rows: engines that run episodes on
    workers rely on it (and check it).
    """

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        ...


_ROW_FIELDS = ("observations", "next_observations", "actions", "rewards", "terminated", "truncated",
               "raw_terminated", "raw_truncated", "mask")


class Record:
    """The arrays of one collection in ``B`` sub-envs, ``[horizon, B, ...]``, filled step by step.

    Besides what :class:`~metarl.trajectories.Trajectories` keeps, it keeps the env's raw
    ``terminated``/``truncated`` flags (not masked by the end of the episode): what the actor's
    ``observe_step`` was given, so that :func:`follow` can give it the same.
    """

    def __init__(self, horizon: int, num_envs: int, observation_dim: int, action_dim: int) -> None:
        B = num_envs
        self.num_envs = B
        self.observations = np.zeros((horizon, B, observation_dim), dtype=np.float32)
        self.next_observations = np.zeros_like(self.observations)
        self.actions = np.zeros((horizon, B, action_dim), dtype=np.float32)
        self.rewards = np.zeros((horizon, B), dtype=np.float32)
        self.terminated = np.zeros((horizon, B), dtype=bool)
        self.truncated = np.zeros((horizon, B), dtype=bool)
        self.raw_terminated = np.zeros((horizon, B), dtype=bool)
        self.raw_truncated = np.zeros((horizon, B), dtype=bool)
        self.mask = np.zeros((horizon, B), dtype=np.float32)
        self.infos: dict[str, np.ndarray] = {}
        self.num_steps = 0
        """Steps recorded so far (rows ``[0, num_steps)`` are filled)."""

    def add(self, observations: np.ndarray, actions: np.ndarray, next_observations: np.ndarray,
            rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
            active: np.ndarray, infos: dict[str, np.ndarray]) -> None:
        """Record one step (``active``: the sub-envs whose episode had not ended before it)."""
        t, B = self.num_steps, self.num_envs
        self.observations[t] = observations
        self.actions[t] = actions
        self.next_observations[t] = next_observations
        self.rewards[t] = rewards
        self.raw_terminated[t] = terminated
        self.raw_truncated[t] = truncated
        self.terminated[t] = terminated & active
        self.truncated[t] = truncated & active
        self.mask[t] = active
        for key, value in infos.items():
            # Per-env scalars only ([B]): reward terms, success flags, distances.
            if np.shape(value) != (B,):
                continue
            if key not in self.infos:
                self.infos[key] = np.zeros(self.rewards.shape, dtype=np.float32)
            self.infos[key][t] = value
        self.num_steps = t + 1

    def rows(self, start: int, stop: int) -> dict[str, Any]:
        """Rows ``[start, stop)`` as plain arrays (what a worker sends back)."""
        rows: dict[str, Any] = {name: getattr(self, name)[start:stop] for name in _ROW_FIELDS}
        rows["infos"] = {key: value[start:stop] for key, value in self.infos.items()}
        return rows

    @classmethod
    def from_slices(cls, slices: Sequence[Sequence[dict[str, Any]]], num_steps: int) -> "Record":
        """The batch's record from its consecutive slices' rows: ``slices[k]`` is slice ``k``'s
        rows (:meth:`rows`) in order of time, ``num_steps`` rows in all; the infos every slice
        reports are kept (an info a slice reported only from some step on is 0 before it)."""
        parts = []
        for index, chunks in enumerate(slices):
            part = {name: np.concatenate([chunk[name] for chunk in chunks])
                    for name in _ROW_FIELDS}
            if len(part["rewards"]) != num_steps:
                raise MetaRLError(f"slice {index} returned {len(part['rewards'])} steps; "
                                  f"expected {num_steps}")
            keys = set().union(*(chunk["infos"] for chunk in chunks))
            part["infos"] = {key: np.concatenate([chunk["infos"].get(key, np.zeros_like(chunk["rewards"]))
                                                  for chunk in chunks]) for key in keys}
            parts.append(part)
        B = sum(part["rewards"].shape[1] for part in parts)
        record = cls(0, B, parts[0]["observations"].shape[2], parts[0]["actions"].shape[2])
        for name in _ROW_FIELDS:
            setattr(record, name, np.concatenate([part[name] for part in parts], axis=1))
        keys = set.intersection(*(set(part["infos"]) for part in parts))
        record.infos = {key: np.concatenate([part["infos"][key] for part in parts], axis=1)
                        for key in sorted(keys)}
        record.num_steps = num_steps
        return record

    def trajectories(self) -> Trajectories:
        T = self.num_steps
        return Trajectories(
            observations=torch.from_numpy(self.observations[:T]),
            actions=torch.from_numpy(self.actions[:T]),
            rewards=torch.from_numpy(self.rewards[:T]),
            next_observations=torch.from_numpy(self.next_observations[:T]),
            terminated=torch.from_numpy(self.terminated[:T]),
            truncated=torch.from_numpy(self.truncated[:T]),
            mask=torch.from_numpy(self.mask[:T]),
            infos={k: torch.from_numpy(v[:T]) for k, v in self.infos.items()},
        )


def _observe(actor: Actor, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
             truncated: np.ndarray) -> None:
    observe_step: Callable[..., Any] | None = getattr(actor, "observe_step", None)
    if observe_step is not None:
        observe_step(torch.from_numpy(actions), torch.from_numpy(rewards),
                     torch.from_numpy(terminated), torch.from_numpy(truncated))


def collect(env: VectorTaskEnv, actor: Actor, *, reset_seed: int | None = None) -> Trajectories:
    """Run one episode in every sub-env of ``env`` and return them as ``Trajectories``.

    Sub-envs whose episode has ended are stepped no further in the record (their columns are
    masked); collection stops when every episode has ended or after ``env.max_episode_steps``.
    An env with a ``collect_remote(actor, reset_seed=...)`` method may run the episode on its
    workers instead (it returns ``None`` where it does not); the numbers are the same.
    """
    remote = getattr(env, "collect_remote", None)
    if remote is not None:
        with torch.no_grad():
            record = remote(actor, reset_seed=reset_seed)
            if record is not None:
                follow(actor, record)
                return record.trajectories()
    B = env.num_envs
    record = Record(env.max_episode_steps, B, env.observation_dim, env.action_dim)
    obs = env.reset(seed=reset_seed)
    active = np.ones(B, dtype=bool)
    with torch.no_grad():
        for _ in range(env.max_episode_steps):
            actions = actor.act(torch.from_numpy(obs)).cpu().numpy()
            next_obs, reward, term, trunc, info = env.step(actions)
            record.add(obs, actions, next_obs, reward, term, trunc, active, info)
            _observe(actor, actions, reward, term, trunc)
            active &= ~(term | trunc)
            obs = next_obs
            if not active.any():
                break
    return record.trajectories()


class SliceRollout:
    """One episode of ``actor`` in the sub-envs ``[start, start + n)`` of a batch of
    ``num_envs``, run where those ``n`` sub-envs live (``env``, a vector env of ``n``).

    The actor acts for the whole batch, with zeros in the rows of sub-envs that are elsewhere
    (it never reads them: see :class:`Actor`), so its calls have the batch's shapes and its
    random draws are the batch's: row for row, the actions are what a local collection of the
    whole batch picks.  :meth:`run` steps until the slice's episodes have all ended, or to a
    given step (the batch goes on until every slice has ended).  ``to_env_units`` maps the
    actor's actions to the env's (see :mod:`metarl.action_scaling`).
    """

    def __init__(self, env: VectorTaskEnv, actor: Actor, *, start: int, num_envs: int,
                 reset_seed: int | None, to_env_units: Callable[[np.ndarray], np.ndarray] | None = None):
        n = env.num_envs
        self.env, self.actor, self.to_env_units = env, actor, to_env_units
        self.columns = slice(start, start + n)
        self.record = Record(env.max_episode_steps, n, env.observation_dim, env.action_dim)
        self.num_envs, self.observation_dim = num_envs, env.observation_dim
        self.observations = env.reset(seed=reset_seed)
        self.active = np.ones(n, dtype=bool)
        self.returned = 0
        """Rows already handed out by :meth:`run`."""

    def run(self, until: int | None = None) -> dict[str, Any]:
        """Step to step ``until`` (``None``: until every episode of the slice has ended, or the
        horizon), and return the rows recorded since the last call (:meth:`Record.rows`)."""
        record, cols = self.record, self.columns
        horizon = self.env.max_episode_steps
        stop = horizon if until is None else min(until, horizon)
        with torch.no_grad():
            while record.num_steps < stop and (until is not None or self.active.any()):
                # Fresh arrays every step, as a local collection's: an actor may keep them.
                inputs = np.zeros((self.num_envs, self.observation_dim), dtype=np.float32)
                inputs[cols] = self.observations
                batch_actions = self.actor.act(torch.from_numpy(inputs)).cpu().numpy()
                actions = batch_actions[cols]
                env_actions = actions if self.to_env_units is None else self.to_env_units(actions)
                next_obs, reward, term, trunc, info = self.env.step(env_actions)
                record.add(self.observations, actions, next_obs, reward, term, trunc, self.active, info)
                rewards = np.zeros(self.num_envs, dtype=np.float32)
                terminated = np.zeros(self.num_envs, dtype=bool)
                truncated = np.zeros(self.num_envs, dtype=bool)
                rewards[cols], terminated[cols], truncated[cols] = reward, term, trunc
                _observe(self.actor, batch_actions, rewards, terminated, truncated)
                self.active &= ~(term | trunc)
                self.observations = next_obs
        rows = record.rows(self.returned, record.num_steps)
        self.returned = record.num_steps
        return rows


def follow(actor: Actor, record: Record) -> None:
    """Take the driver's ``actor`` through an episode its copies ran on workers: the same calls
    a local collection makes, on the recorded observations, so its state and random draws end
    where they would have; its actions must match the recorded ones (they do, bit for bit, for
    an actor on the CPU whose rows are independent; a GPU's rounding is allowed for)."""
    for t in range(record.num_steps):
        actions = actor.act(torch.from_numpy(record.observations[t])).cpu().numpy()
        if not np.allclose(actions, record.actions[t], rtol=1e-4, atol=1e-5):
            row = int(np.argmax(np.abs(actions - record.actions[t]).max(axis=1)))
            raise MetaRLError(
                f"the actor picked other actions at step {t} than its copy on the workers "
                f"(sub-env {row}: {actions[row].tolist()} vs {record.actions[t][row].tolist()}): "
                f"{type(actor).__name__}'s actions depend on other sub-envs' rows, which episodes "
                "on workers cannot reproduce; set env_options.ray_granularity=step"
            )
        _observe(actor, record.actions[t], record.rewards[t], record.raw_terminated[t],
                 record.raw_truncated[t])


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
