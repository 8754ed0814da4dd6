"""Videos of adapted rollouts, rendered offscreen for families whose single env renders (MuJoCo).

The agent adapts to one held-out task through its own ``adapt`` (the evaluator's protocol, so
this works for every agent) on a sampler whose vector env records, for its first sub-env, the
reset seed and the actions taken.  The last recorded episode (the first episode of the last
adaptation stage) is then replayed in the family's reference Gymnasium env (``family.make_env``)
from the same reset seed, rendering a frame per step; the fast engines reproduce the reference
env from the same seed (``tests/test_envs_engine.py``), so the replay shows the adapted rollout.
The ``rollout`` engine matches ``mj_step`` only to solver tolerance, which chaos amplifies over
an episode, so the recording sampler steps such families with ``engine="threads"`` instead.

Rendering needs an offscreen OpenGL: ``MUJOCO_GL=egl`` (the default we set when unset) or
``osmesa``.  Where none is available the video is skipped with a one-line notice.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from metarl.agent import MetaAgent
from metarl.envs.parallel import ENGINE_OPTIONS
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, Task, TaskFamily
from metarl.vector_env import VectorTaskEnv


@dataclass
class _Episode:
    task: Task
    seed: int | None
    actions: list[np.ndarray]


class _FirstEnvRecorder:
    """A :class:`VectorTaskEnv` that passes everything through and records sub-env 0."""

    def __init__(self, env: VectorTaskEnv, episodes: list[_Episode]):
        self.env = env
        self.episodes = episodes
        self.num_envs, self.max_episode_steps = env.num_envs, env.max_episode_steps
        self.observation_dim, self.action_dim = env.observation_dim, env.action_dim
        self.action_low, self.action_high = env.action_low, env.action_high
        self._task: Task = {}
        self._active = False

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        self.env.set_tasks(tasks)
        self._task = dict(tasks[0])

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        self.episodes.append(_Episode(self._task, seed, []))
        self._active = True
        return self.env.reset(seed=seed)

    def step(self, actions: np.ndarray):
        result = self.env.step(actions)
        if self._active:
            self.episodes[-1].actions.append(np.array(actions[0], dtype=np.float64))
            self._active = not (bool(result[2][0]) or bool(result[3][0]))
        return result

    def close(self) -> None:
        self.env.close()


@dataclass(frozen=True)
class VideoResult:
    """``frames [T, H, W, 3]`` uint8, or None with a one-line ``notice`` saying why."""

    frames: np.ndarray | None
    notice: str | None = None


def _render_env(family: TaskFamily, task: Task, width: int, height: int) -> Any | str:
    """The family's single env in ``rgb_array`` mode, or why it has no renderer at all."""
    if family.make_env is None:
        return "it has no single env (family.make_env is None)"
    try:
        return family.make_env(task=task, render_mode="rgb_array", width=width, height=height)
    except TypeError:  # a non-MuJoCo env (e.g. 2D navigation) takes no render options
        return "its env takes no render_mode, width and height"


def record_adapted_rollout(
    agent: MetaAgent,
    family: TaskFamily,
    task: Task,
    *,
    num_stages: int,
    episodes_per_stage: int,
    seed: int,
    generator: torch.Generator,
    env_options: dict[str, Any] | None = None,
    unit_actions: bool = True,
    width: int = 160,
    height: int = 120,
    frame_stride: int = 2,
) -> VideoResult:
    """Adapt ``agent`` to ``task`` (``num_stages`` stages of ``episodes_per_stage`` episodes)
    and render the first episode of the last stage.

    Returns frames ``[F, H, W, 3]`` uint8 (the reset frame, then one every ``frame_stride``
    steps and the last: software GL takes ~0.1-0.2 s a frame on a busy CPU), or ``frames=None``
    with a one-line ``notice`` saying why: the family has no renderer (e.g. 2D navigation), or
    no offscreen renderer works.
    """
    if frame_stride < 1:
        raise MetaRLError(f"frame_stride must be at least 1; got {frame_stride}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    env = _render_env(family, task, width, height)
    if isinstance(env, str):
        return VideoResult(None, f"video skipped: {family.name} has no renderer ({env})")
    try:
        env.reset(seed=0)
        env.render()
    except NotImplementedError:  # Gymnasium's Env.render: the env draws nothing
        env.close()
        return VideoResult(None, f"video skipped: {family.name} has no renderer "
                                 f"({type(env).__name__}.render is not implemented)")
    except Exception as error:  # any GL failure: missing library, no device, no display
        env.close()
        message = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        return VideoResult(None, (
            f"video skipped: no offscreen renderer for {family.name} "
            f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')}; {type(error).__name__}: {message})"
        ))
    episodes: list[_Episode] = []

    def recording_env(num_envs: int, **kwargs: Any) -> _FirstEnvRecorder:
        return _FirstEnvRecorder(family.make_vector_env(num_envs, **kwargs), episodes)

    # Recorded in this process (workers could not hand their actions back), with mj_step
    # where the family has engines: a bit-exact replay needs it, not the rollout engine.
    local_options = {k: v for k, v in (env_options or {}).items() if k not in ENGINE_OPTIONS}
    local_options["engine"] = "threads" if family.engines else "serial"
    sampler = Sampler(dataclasses.replace(family, make_vector_env=recording_env), seed=seed,
                      env_options=local_options, unit_actions=unit_actions)
    try:
        for _ in agent.adapt([task], sampler, num_stages=num_stages,
                             episodes_per_stage=episodes_per_stage, generator=generator):
            pass
    finally:
        sampler.close()
    # Each stage is one ``sample`` call, i.e. one reset of the batch: the final recorded episode
    # is sub-env 0 (the task's first episode) of the last stage.
    episode = episodes[-1]
    try:
        env.reset(seed=episode.seed)
        frames = [env.render()]
        for step, action in enumerate(episode.actions, start=1):
            _, _, terminated, truncated, _ = env.step(action)
            if step % frame_stride == 0 or terminated or truncated:
                frames.append(env.render())
            if terminated or truncated:
                break
    finally:
        env.close()
    return VideoResult(np.stack(frames).astype(np.uint8))
