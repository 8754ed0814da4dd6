"""Every family can be stepped by worker processes; ``auto`` picks per family; bad options are
clear errors.  (Ray actors: ``tests/test_ray_engine.py``.)"""

from __future__ import annotations

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest

from metarl.envs.navigation import NavigationVectorEnv
from metarl.envs.engine import MujocoVectorEnv
from metarl.envs.parallel import MIN_ENVS_PER_WORKER, accepted_engines, build_vector_env
from metarl.envs.processes import ProcessVectorEnv
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, Task, TaskFamily, get_family
from metarl.vector_env import GymVectorTaskEnv


class DriftEnv(gym.Env):
    """A plain (non-MuJoCo) Python env as a user writes one: a point drifting towards a target
    speed, noisy start, reward terms in ``info``; task ``{"speed": s}``.  ``kind`` decides which
    extra reward term it reports (slices of mixed kinds report different keys)."""

    def __init__(self, task: Task | None = None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.set_task(task or {"speed": 0.5, "kind": 0})

    def set_task(self, task: Task) -> None:
        self.task = dict(task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.normal(size=3).astype(np.float32)
        return self.state, {}

    def step(self, action):
        self.state = (0.9 * self.state + 0.1 * np.r_[action, action.sum()]).astype(np.float32)
        reward_speed = -abs(float(self.state[0]) - self.task["speed"])
        info = {"reward_speed": reward_speed, f"reward_kind{self.task['kind']}": 0.0}
        return self.state, reward_speed, bool(self.state[2] > 3.0), False, info


def _drift_tasks(rng: np.random.Generator, num_tasks: int) -> list[Task]:
    return [{"speed": float(s), "kind": int(k)}
            for s, k in zip(rng.uniform(-1, 1, num_tasks), rng.integers(0, 2, num_tasks))]


DRIFT = TaskFamily(
    name="Drift", description="test family: a Python env in a GymVectorTaskEnv list",
    citation="tests", sample_tasks=_drift_tasks,
    make_vector_env=lambda num_envs, *, seed=0: GymVectorTaskEnv(
        DriftEnv, num_envs, max_episode_steps=15, seed=seed),
    max_episode_steps=15, num_train_tasks=20, num_test_tasks=5, make_env=DriftEnv,
)


def _run(env, tasks, *, steps=20, seed=None):
    """Two resets' worth of stepping with fixed random actions; every output, stacked."""
    env.set_tasks(tasks)
    rng = np.random.default_rng(7)
    record = []
    for _ in range(2):
        observations = env.reset(seed=seed)
        record.append(observations)
        for _ in range(steps):
            actions = rng.uniform(env.action_low, env.action_high, size=(env.num_envs, env.action_dim))
            observations, rewards, terminated, truncated, infos = env.step(actions)
            record += [observations, rewards, terminated, truncated]
            record += [infos[key] for key in sorted(infos)]
    env.close()
    return record


@pytest.mark.parametrize("family", [DRIFT, get_family("Navigation2D"), get_family("PointRobot-Sparse")],
                         ids=lambda family: family.name)
def test_processes_equal_the_in_process_engine_for_families_without_a_kernel(family):
    tasks = family.sample_tasks(np.random.default_rng(1), 7)
    serial = build_vector_env(family, 7, seed=5, engine="serial")
    processes = build_vector_env(family, 7, seed=5, engine="processes", num_workers=3)
    assert isinstance(processes, ProcessVectorEnv) and len(processes.slices) == 3
    for attribute in ("observation_dim", "action_dim", "max_episode_steps"):
        assert getattr(processes, attribute) == getattr(serial, attribute)
    expected, actual = _run(serial, tasks), _run(processes, tasks)
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        np.testing.assert_array_equal(a, b)


def test_slices_with_different_reward_terms_keep_the_common_ones():
    tasks = [{"speed": 0.1, "kind": 0}] * 4 + [{"speed": 0.1, "kind": 1}] * 4
    env = build_vector_env(DRIFT, 8, engine="processes", num_workers=2)
    env.set_tasks(tasks)
    env.reset()
    infos = env.step(np.zeros((8, 2)))[4]
    assert sorted(infos) == ["reward_speed"] and infos["reward_speed"].shape == (8,)
    env.close()


def test_auto_picks_the_measured_engine_of_each_family():
    assert isinstance(build_vector_env(get_family("Navigation2D"), 64), NavigationVectorEnv)
    mujoco = build_vector_env(get_family("HalfCheetahVel-MAML"), 4)
    assert isinstance(mujoco, MujocoVectorEnv) and mujoco.stepping == "rollout"
    mujoco.close()
    python_list = build_vector_env(DRIFT, 2 * MIN_ENVS_PER_WORKER, num_workers=2)
    assert isinstance(python_list, ProcessVectorEnv)
    python_list.close()
    # Too few sub-envs for the workers to pay for their round trips: stepped in-process.
    assert isinstance(build_vector_env(DRIFT, MIN_ENVS_PER_WORKER, num_workers=2), GymVectorTaskEnv)
    assert isinstance(build_vector_env(DRIFT, 64, num_workers=1), GymVectorTaskEnv)


def test_engine_names_and_options_are_checked():
    navigation = get_family("Navigation2D")
    assert accepted_engines(navigation) == ("auto", "serial", "processes", "ray")
    assert accepted_engines(get_family("AntDir")) == (
        "auto", "rollout", "threads", "serial", "gym", "processes", "ray")
    with pytest.raises(MetaRLError, match=r"unknown engine 'threads' for Navigation2D; accepted: "
                       r"auto, serial, processes, ray"):
        build_vector_env(navigation, 2, engine="threads")
    with pytest.raises(MetaRLError, match=r"unknown env_options key 'num_thread' for Navigation2D; "
                       r"accepted: engine, num_workers, "):
        build_vector_env(navigation, 2, num_thread=2)
    with pytest.raises(MetaRLError, match="num_workers must be a positive integer; got 0"):
        build_vector_env(navigation, 2, engine="processes", num_workers=0)
    with pytest.raises(MetaRLError, match="num_workers and timeout_s apply to engines 'processes' "
                       "and 'ray'; the engine is 'serial'"):
        build_vector_env(navigation, 2, engine="serial", num_workers=2)
    with pytest.raises(MetaRLError, match=r"env_options.ray_address, ray_restart_timeout_s, "
                       r"ray_cpus_per_worker, ray_compiled_graph, ray_granularity only apply to "
                       r"engine 'ray'; the engine is 'processes'"):
        build_vector_env(navigation, 2, engine="processes", ray_address="auto")
    with pytest.raises(MetaRLError, match=r"ray_granularity must be episode or step \(unset: "
                       r"episode\); got 'trial'"):
        build_vector_env(navigation, 2, engine="ray", ray_granularity="trial")


def test_a_killed_worker_of_a_python_env_family_is_a_clear_error():
    env = build_vector_env(DRIFT, 6, engine="processes", num_workers=2)
    env.set_tasks(DRIFT.sample_tasks(np.random.default_rng(0), 6))
    env.reset()
    os.kill(env._processes[0].pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(MetaRLError, match=r"engine worker 0 \(pid \d+(, cpu \d+)?, sub-envs 0..2\) was killed "
                       r"by SIGKILL during 'step'"):
        env.step(np.zeros((6, 2)))
    assert time.monotonic() - start < 10.0


def test_sampler_reads_env_options_through_the_same_entry_point():
    sampler = Sampler(DRIFT, seed=0, env_options={"engine": "processes", "num_workers": 2})
    assert isinstance(sampler.env(4), ProcessVectorEnv)
    sampler.close()
    with pytest.raises(MetaRLError, match="unknown engine 'warp' for Drift"):
        Sampler(DRIFT, seed=0, env_options={"engine": "warp"}).env(2)


def test_engine_ray_without_the_extra_is_a_one_line_error(monkeypatch):
    from metarl.envs import ray_workers

    monkeypatch.setattr(ray_workers, "ray", None)
    monkeypatch.setattr(ray_workers, "available", lambda: False)
    with pytest.raises(MetaRLError, match=r"^engine 'ray' needs the optional extra: "
                       r"pip install -e '\.\[ray\]' \(or pip install 'metarl\[ray\]'\)$"):
        build_vector_env(get_family("Navigation2D"), 4, engine="ray")


def test_reading_the_dimensions_keeps_no_worker_alive():
    """``build_run`` reads the observation size from a probe env: under ``engine=processes`` it
    is built in-process and closed, not a worker process kept for the whole run."""
    import multiprocessing

    sampler = Sampler(DRIFT, seed=0, env_options={"engine": "processes", "num_workers": 2})
    spec = sampler.describe()
    assert (spec.observation_dim, spec.action_dim, spec.max_episode_steps) == (3, 2, 15)
    assert not sampler._envs and not multiprocessing.active_children()
    scaled = Sampler(get_family("Navigation2D"), seed=0).describe()
    assert scaled.action_low.tolist() == [-1.0, -1.0] and scaled.action_high.tolist() == [1.0, 1.0]


def test_workers_that_cover_every_core_are_pinned_one_per_core():
    from metarl.envs.processes import worker_cpus

    cpus = sorted(os.sched_getaffinity(0))
    # Auto: pinned when the workers cover every core (round robin), never with fewer workers.
    if len(cpus) > 1:
        assert worker_cpus(len(cpus)) == cpus
        assert worker_cpus(len(cpus) + 1) == [*cpus, cpus[0]]
        assert worker_cpus(len(cpus) - 1) == [None] * (len(cpus) - 1)
    assert worker_cpus(2, pin=False) == [None, None]
    assert worker_cpus(3, pin=True) == [cpus[i % len(cpus)] for i in range(3)]

    tasks = DRIFT.sample_tasks(np.random.default_rng(0), 6)
    pinned = build_vector_env(DRIFT, 6, engine="processes", num_workers=2, pin_workers=True)
    assert [os.sched_getaffinity(p.pid) for p in pinned._processes] == [{cpus[0]}, {cpus[1 % len(cpus)]}]
    free = build_vector_env(DRIFT, 6, engine="processes", num_workers=2, pin_workers=False)
    assert [os.sched_getaffinity(p.pid) for p in free._processes] == [set(cpus)] * 2
    serial = build_vector_env(DRIFT, 6, engine="serial")
    expected = _run(serial, tasks)
    for env in (pinned, free):  # pinning changes where workers run, never what they compute
        for a, b in zip(expected, _run(env, tasks)):
            np.testing.assert_array_equal(a, b)

    with pytest.raises(MetaRLError, match=r"env_options.pin_workers must be true or false \(unset: auto\); "
                       "got 'yes'"):
        build_vector_env(DRIFT, 6, engine="processes", pin_workers="yes")
    with pytest.raises(MetaRLError, match="pin_workers applies to engine 'processes'; the engine is 'serial'"):
        build_vector_env(DRIFT, 6, engine="serial", pin_workers=True)
