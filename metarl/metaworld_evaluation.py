"""Any of our agents scored by the ``metaworld`` package's own evaluation
(``metaworld.evaluation.metalearning_evaluation``), as a cross-check of
:mod:`metarl.adapt_then_evaluate`.

``metalearning_evaluation`` drives a ``MetaLearningAgent`` step by step (``init``,
``adapt_action``/``step`` for the adaptation episodes, ``adapt``, then ``eval_action``/``reset``
for the evaluation episodes) on Meta-World's vector env; our agents are driven by their own
``adapt`` generator, which asks a sampler for whole stages of episodes.
:class:`MetaWorldAgent` joins the two: per sub-env, one thread runs the agent's ``adapt`` for
that sub-env's task with the same schedule as :func:`~metarl.adapt_then_evaluate.adaptation_schedule`
(the same stages, the same ones acting with the mean), against a sampler that hands each stage's
actor to the step loop and gets the stage's episodes back.  A stage of ``E`` episodes (MAML's
adaptation batch) is played as ``E`` consecutive episodes in the one sub-env, each through row
``e`` of the actor's batch of ``E``.  Only one thread runs at a time (each waits for the other),
so nothing is computed concurrently.

Meta-World's evaluation phase tells an agent nothing but ``reset(dones)``: no rewards, no
success flags.  :meth:`MetaWorldAgent.watch` wraps the vector env so that every step's
rewards, final observations and success flags reach the agent's actors too (RL² reads the last
reward, PEARL builds its posterior from the transitions), as they do under our protocol.
The differences that remain: Meta-World ends an evaluation episode at its first success (ours
play all steps; which episodes succeed is the same for a policy without memory), draws the goals
of each round pseudo-randomly, and counts the first ``evaluation_episodes`` episodes to end per
class (with one sub-env per class: exactly that sub-env's).  Nothing here imports ``metaworld``.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metarl.adapt_then_evaluate import ProtocolOptions, adaptation_schedule
from metarl.agent import MetaAgent
from metarl.rollout import Actor, EnvSpec
from metarl.tasks import MetaRLError, Task
from metarl.trajectories import Trajectories


class _RoundOver(Exception):
    """Raised inside an ``adapt`` thread when the round ends before its generator does."""


_EXHAUSTED = object()


@dataclass
class _EnvShape:
    """What an agent reads of ``sampler.env(n)``: its size and action box."""

    num_envs: int
    action_low: np.ndarray
    action_high: np.ndarray


@dataclass
class _Stage:
    """One stage an ``adapt`` thread asked for, being played: ``E`` episodes in turn."""

    actor: Actor
    num_episodes: int
    episode: int = 0
    steps: list[list[tuple]] = field(default_factory=list)
    """Per finished or running episode, its steps ``(obs, action, reward, next_obs, term, trunc, success)``."""


class _BridgeSampler:
    """The sampler an ``adapt`` thread sees for one sub-env: ``sample`` hands the stage to the
    step loop and waits for its episodes."""

    def __init__(self, spec: EnvSpec, family: Any) -> None:
        self._spec = spec
        self.family = family
        self.env_steps = 0
        self.requests: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()

    def describe(self) -> EnvSpec:
        return self._spec

    def env(self, num_envs: int) -> _EnvShape:
        return _EnvShape(num_envs, self._spec.action_low, self._spec.action_high)

    def sample(self, tasks: list[Task], actor: Actor, *, episodes_per_task: int) -> Trajectories:
        if len(tasks) != 1:
            raise MetaRLError(f"a Meta-World sub-env serves one task; the agent asked for {len(tasks)}")
        self.requests.put(_Stage(actor, episodes_per_task))
        reply = self.replies.get()
        if reply is _RoundOver:
            raise _RoundOver
        self.env_steps += int(reply.mask.sum().item())
        return reply


def _trajectories(episodes: list[list[tuple]]) -> Trajectories:
    """``[T, E]`` trajectories of ``E`` episodes of possibly different lengths (mask)."""
    T, E = max(len(steps) for steps in episodes), len(episodes)
    observation_dim, action_dim = len(episodes[0][0][0]), len(episodes[0][0][1])
    arrays = {name: np.zeros(shape, dtype=np.float32) for name, shape in (
        ("observations", (T, E, observation_dim)), ("actions", (T, E, action_dim)),
        ("rewards", (T, E)), ("next_observations", (T, E, observation_dim)),
        ("terminated", (T, E)), ("truncated", (T, E)), ("success", (T, E)), ("mask", (T, E)))}
    for e, steps in enumerate(episodes):
        for t, (obs, action, reward, next_obs, term, trunc, success) in enumerate(steps):
            for name, value in (("observations", obs), ("actions", action), ("rewards", reward),
                                ("next_observations", next_obs), ("terminated", term),
                                ("truncated", trunc), ("success", success), ("mask", 1.0)):
                arrays[name][t, e] = value
    tensor = {name: torch.from_numpy(value) for name, value in arrays.items()}
    return Trajectories(
        observations=tensor["observations"], actions=tensor["actions"], rewards=tensor["rewards"],
        next_observations=tensor["next_observations"], terminated=tensor["terminated"] > 0,
        truncated=tensor["truncated"] > 0, mask=tensor["mask"], infos={"success": tensor["success"]})


class _SubEnv:
    """The agent's ``adapt`` for one sub-env of one round, run in a thread of its own."""

    def __init__(self, agent: MetaAgent, spec: EnvSpec, family: Any, task: Task,
                 options: ProtocolOptions, generator: torch.Generator) -> None:
        self.sampler = _BridgeSampler(spec, family)
        self.stage: _Stage | None = None
        self.last_actor: Actor | None = None
        self.error: BaseException | None = None
        schedule = adaptation_schedule(agent, options)

        def run() -> None:
            try:
                for _ in agent.adapt([task], self.sampler, generator=generator, **schedule):
                    pass
            except _RoundOver:
                return
            except BaseException as error:  # re-raised in the step loop's thread
                self.error = error
            self.sampler.requests.put(_EXHAUSTED)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _current(self) -> _Stage | None:
        """The stage being played; waits for the ``adapt`` thread to ask for the next one."""
        if self.stage is None:
            request = self.sampler.requests.get()
            if self.error is not None:
                raise MetaRLError(f"the agent's adapt failed inside metaworld's evaluation: {self.error!r}") \
                    from self.error
            if request is _EXHAUSTED:  # Meta-World plays on: the adapted actor keeps acting
                self.sampler.requests.put(_EXHAUSTED)
                return None
            self.stage = request
            self.stage.steps.append([])
            self.last_actor = request.actor
        return self.stage

    def act(self, observation: np.ndarray) -> np.ndarray:
        stage = self._current()
        actor = stage.actor if stage is not None else self.last_actor
        rows = stage.num_episodes if stage is not None else 1
        row = stage.episode if stage is not None else 0
        # A stage of E episodes is E columns of the actor's batch; column e is the one playing.
        batch = torch.as_tensor(np.repeat(observation[None], rows, 0), dtype=torch.float32)
        with torch.no_grad():
            return actor.act(batch)[row].cpu().numpy().astype(np.float64)

    def observe(self, observation, action, reward, next_observation, terminated, truncated, success) -> None:
        stage = self.stage
        if stage is None:
            return
        observe_step = getattr(stage.actor, "observe_step", None)
        if observe_step is not None:
            E = stage.num_episodes
            observe_step(torch.as_tensor(np.repeat(action[None], E, 0), dtype=torch.float32),
                         torch.full((E,), float(reward)), torch.full((E,), bool(terminated)),
                         torch.full((E,), bool(truncated)))
        stage.steps[-1].append((observation, action, reward, next_observation, terminated, truncated, success))
        if terminated or truncated:
            stage.episode += 1
            if stage.episode == stage.num_episodes:
                self.stage = None
                self.sampler.replies.put(_trajectories(stage.steps))
                # Wait until the adapt thread asks for its next stage (or ends): threads that
                # computed at once would share the agent's modules (functional_call swaps a
                # module's parameters in place), and the round's results would depend on timing.
                self._current()
            else:
                stage.steps.append([])

    def stop(self) -> None:
        if self.thread.is_alive():
            self.sampler.replies.put(_RoundOver)
            self.thread.join(timeout=10)


class MetaWorldAgent:
    """A :class:`~metarl.agent.MetaAgent` as ``metaworld.evaluation.MetaLearningAgent``.

    ``spec``: the env's :class:`~metarl.rollout.EnvSpec` (``Sampler.describe()`` of the run);
    ``family``: the run's family (agents read ``family.max_episode_steps``).  Pass the vector env
    through :meth:`watch` before handing both to ``metalearning_evaluation``, with the same
    ``adaptation_episodes`` and ``evaluation_episodes`` as ``options``.
    """

    def __init__(self, agent: MetaAgent, *, spec: EnvSpec, family: Any, options: ProtocolOptions,
                 seed: int = 0) -> None:
        self.agent = agent
        self.spec = spec
        self.family = family
        self.options = options
        self.seed = seed
        self.num_rounds = 0
        self._subenvs: list[_SubEnv] = []
        self._observations: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        self.num_envs = 0

    # ------------------------------------------------------------------ the step loop's side
    def watch(self, envs: Any) -> "_WatchedEnvs":
        """``envs`` passing every step's outcome to this agent's actors."""
        self.num_envs = envs.num_envs
        return _WatchedEnvs(envs, self)

    def _act(self, observations: np.ndarray) -> np.ndarray:
        self._observations = np.asarray(observations)
        self._actions = np.stack([subenv.act(obs) for subenv, obs in zip(self._subenvs, self._observations)])
        return self._actions

    def _observed(self, next_observations, rewards, terminations, truncations, infos) -> None:
        final = infos.get("final_info", {})
        final_obs = infos.get("final_obs")
        for b, subenv in enumerate(self._subenvs):
            done = bool(terminations[b] or truncations[b])
            # Gymnasium's same-step autoreset: a finished episode's last observation and info
            # are under final_obs / final_info; the returned ones start the next episode.
            next_obs = final_obs[b] if done and final_obs is not None else next_observations[b]
            success = final["success"][b] if done and "success" in final else infos.get("success", np.zeros(len(rewards)))[b]
            subenv.observe(self._observations[b], self._actions[b], float(rewards[b]), np.asarray(next_obs),
                           bool(terminations[b]), bool(truncations[b]), float(success))

    # ------------------------------------------------------------------ MetaLearningAgent
    def init(self) -> None:
        """A new round: every sub-env's task starts from the meta-learned state."""
        if self.num_envs == 0:
            raise MetaRLError("MetaWorldAgent.init before watch(envs): pass the vector env through watch()")
        self.close()
        self._subenvs = [
            _SubEnv(self.agent, self.spec, self.family, {"subenv": b}, self.options,
                    torch.Generator().manual_seed(self.seed * 1_000_003 + self.num_rounds * 7_919 + b))
            for b in range(self.num_envs)]
        self.num_rounds += 1

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._act(observations), {}

    def step(self, timestep: Any) -> None:
        """Nothing: :meth:`watch` already passed the step on (with success and final observations)."""

    def adapt(self) -> None:
        """Nothing: the agent's own ``adapt`` adapts as its episodes arrive."""

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        return self._act(observations)

    def reset(self, env_mask: np.ndarray) -> None:
        """Nothing: episode boundaries reach the agent with the steps (its trial or context
        spans the evaluation episodes, as under our protocol)."""

    def close(self) -> None:
        for subenv in self._subenvs:
            subenv.stop()
        self._subenvs = []


class _WatchedEnvs:
    """A vector env whose ``step`` also tells a :class:`MetaWorldAgent` what happened."""

    def __init__(self, envs: Any, agent: MetaWorldAgent) -> None:
        self._envs = envs
        self._agent = agent

    def step(self, actions: np.ndarray):
        next_observations, rewards, terminations, truncations, infos = self._envs.step(actions)
        self._agent._observed(next_observations, rewards, terminations, truncations, infos)
        return next_observations, rewards, terminations, truncations, infos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._envs, name)
