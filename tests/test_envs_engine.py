"""The fast MuJoCo engines reproduce the Gymnasium reference engine; failures are clear errors.

``threads``, ``serial`` and ``processes`` equal the reference bit for bit; ``rollout`` equals it
to solver tolerance (its warm start is rebuilt from the state, see ``metarl.envs.engine``).
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from conftest import MUJOCO_FAMILIES
from metarl.envs.engine import ENGINES, MujocoVectorEnv, supports_rollout
from metarl.envs.parallel import build_vector_env
from metarl.envs.processes import ProcessVectorEnv
from metarl.tasks import MetaRLError, get_family
from metarl.vector_env import GymVectorTaskEnv, VectorTaskEnv

ROLLOUT_FAMILIES = [
    name for name in MUJOCO_FAMILIES
    if supports_rollout(get_family(name).make_vector_env(1, engine="serial").kernel)
]
"""Families observed through qpos/qvel only: HalfCheetah's and the RandParams ones."""

NUM_ENVS = 3


def _assert_same(reference, fast):
    names = ["observations", "rewards", "terminated", "truncated"]
    for name, expected, actual in zip(names, reference[:4], fast[:4]):
        assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=name)
    reference_infos, fast_infos = reference[4], fast[4]
    assert any(key.startswith("reward_") for key in fast_infos)
    for key, value in fast_infos.items():
        assert value.shape == (NUM_ENVS,), key
        np.testing.assert_allclose(value, reference_infos[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert {k for k in reference_infos if k.startswith("reward_")} == {k for k in fast_infos if k.startswith("reward_")}


ENGINE_CASES = [
    *[(name, engine) for engine in ("threads", "serial", "processes") for name in MUJOCO_FAMILIES],
    *[(name, "rollout") for name in ROLLOUT_FAMILIES],
]


@pytest.mark.parametrize(("name", "engine"), ENGINE_CASES)
def test_fast_engine_equals_reference_engine(name, engine):
    family = get_family(name)
    reference = family.make_vector_env(NUM_ENVS, seed=3, engine="gym", max_episode_steps=12)
    fast = build_vector_env(family, NUM_ENVS, seed=3, engine=engine, max_episode_steps=12)
    expected_class = ProcessVectorEnv if engine == "processes" else MujocoVectorEnv
    assert isinstance(reference, GymVectorTaskEnv) and isinstance(fast, expected_class)
    assert isinstance(fast, VectorTaskEnv)
    for attribute in ["num_envs", "observation_dim", "action_dim", "max_episode_steps"]:
        assert getattr(fast, attribute) == getattr(reference, attribute)
    np.testing.assert_array_equal(fast.action_low, reference.action_low)
    np.testing.assert_array_equal(fast.action_high, reference.action_high)
    rng = np.random.default_rng(0)
    scale = 0.4 if name == "HumanoidDir" else 1.0
    for round_index in range(2):  # a second round: new tasks (new dynamics), next reset seeds
        tasks = family.sample_tasks(rng, NUM_ENVS)
        reference.set_tasks(tasks)
        fast.set_tasks(tasks)
        np.testing.assert_allclose(fast.reset(), reference.reset(), rtol=1e-6, atol=1e-6)
        for _ in range(12):
            actions = (scale * rng.uniform(fast.action_low, fast.action_high, (NUM_ENVS, fast.action_dim))).astype(np.float32)
            reference_step, fast_step = reference.step(actions), fast.step(actions)
            _assert_same(reference_step, fast_step)
        assert (fast_step[2] | fast_step[3]).all()  # every sub-env ended by the 12-step horizon
    reference.close()
    fast.close()


def test_unknown_engine_and_wrong_shapes_are_clear_errors():
    family = get_family("HalfCheetahDir")
    with pytest.raises(MetaRLError, match="accepted: " + ", ".join(ENGINES)):
        family.make_vector_env(2, engine="warp")
    env = family.make_vector_env(2)
    with pytest.raises(MetaRLError, match="pass exactly one task"):
        env.set_tasks([{"direction": 1}])
    env.reset()
    with pytest.raises(MetaRLError, match="num_envs, action_dim"):
        env.step(np.zeros((3, env.action_dim)))
    env.close()


def test_worker_thread_errors_reach_the_caller():
    family = get_family("HalfCheetahDir")
    env = family.make_vector_env(4, engine="threads", num_threads=2)
    env.reset()
    env.models[3] = None  # the last sub-env, stepped by the pool thread, cannot be stepped
    with pytest.raises(TypeError):
        env.step(np.zeros((4, env.action_dim), dtype=np.float32))
    env.close()


def test_engine_is_deterministic_for_a_seed():
    family = get_family("AntDir2D")
    tasks = family.sample_tasks(np.random.default_rng(0), 4)
    results = []
    for _ in range(2):
        env = family.make_vector_env(4, seed=11)
        env.set_tasks(tasks)
        observations = [env.reset()]
        for _ in range(5):
            observations.append(env.step(np.full((4, env.action_dim), 0.3, dtype=np.float32))[0])
        results.append(np.stack(observations))
        env.close()
    np.testing.assert_array_equal(results[0], results[1])


def test_auto_engine_picks_rollout_where_the_family_allows_it():
    assert get_family("HalfCheetahVel-MAML").make_vector_env(2).stepping == "rollout"
    assert get_family("HopperRandParams").make_vector_env(2).stepping == "rollout"
    assert get_family("AntDir").make_vector_env(2).stepping == "threads"  # reads contact forces
    with pytest.raises(MetaRLError, match="engine 'rollout' needs .* AntKernel also reads cfrc_ext"):
        get_family("AntDir").make_vector_env(2, engine="rollout")


def test_rollout_engine_is_deterministic_and_independent_of_its_thread_count():
    """The warm start is passed in explicitly, so no state leaks between MuJoCo's pool threads:
    1 and 2 threads give the same numbers, over whole episodes and a second reset."""
    family = get_family("HalfCheetahVel-MAML")
    tasks = family.sample_tasks(np.random.default_rng(0), 8)
    runs = []
    for num_threads in (1, 2, 2):
        env = family.make_vector_env(8, seed=5, engine="rollout", num_threads=num_threads,
                                     max_episode_steps=60)
        env.set_tasks(tasks)
        rng = np.random.default_rng(1)
        observations = []
        for _ in range(2):
            observations.append(env.reset())
            for _ in range(60):
                actions = rng.uniform(-1, 1, (8, env.action_dim)).astype(np.float32)
                observations.append(env.step(actions)[0])
        env.close()
        runs.append(np.stack(observations))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[1], runs[2])


def test_rollout_engine_tracks_mj_step_over_a_whole_episode():
    """Over a 200-step HalfCheetah episode the rollout engine's trajectory stays the ``mj_step``
    trajectory until chaos amplifies the solver-tolerance difference of the warm start; returns
    stay within a few percent."""
    family = get_family("HalfCheetahVel-MAML")
    tasks = family.sample_tasks(np.random.default_rng(0), 4)
    totals = []
    for engine in ("threads", "rollout"):
        env = family.make_vector_env(4, seed=2, engine=engine)
        env.set_tasks(tasks)
        env.reset()
        rng = np.random.default_rng(3)
        first, total = None, np.zeros(4)
        for step in range(200):
            observations, rewards, *_ = env.step(0.5 * rng.uniform(-1, 1, (4, env.action_dim)))
            total += rewards
            if step == 19:
                first = observations
        env.close()
        totals.append((first, total))
    np.testing.assert_allclose(totals[1][0], totals[0][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(totals[1][1], totals[0][1], rtol=0.05)


# ------------------------------------------------------------------ process engine failures
def _process_env(num_envs=4):
    family = get_family("HalfCheetahDir")
    env = build_vector_env(family, num_envs, engine="processes", num_workers=2)
    env.set_tasks(family.sample_tasks(np.random.default_rng(0), num_envs))
    env.reset()
    return env


def test_a_killed_worker_is_a_clear_error_and_nothing_hangs():
    env = _process_env()
    env.step(np.zeros((4, env.action_dim)))
    victim = env._processes[1]
    os.kill(victim.pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(MetaRLError, match=r"engine worker 1 \(pid \d+(, cpu \d+)?, sub-envs 2..3\) was killed "
                       r"by SIGKILL during 'step'; the vector env is closed"):
        env.step(np.zeros((4, env.action_dim)))
    assert time.monotonic() - start < 10.0
    assert not any(process.is_alive() for process in env._processes)  # the others were stopped
    with pytest.raises(MetaRLError, match="closed vector env"):
        env.reset()
    env.close()  # closing again is harmless


def test_an_exception_in_a_worker_reaches_the_caller_with_its_traceback():
    env = _process_env()
    with pytest.raises(MetaRLError, match=r"(?s)engine worker 0 .* failed during 'set_tasks'.*KeyError"):
        env.set_tasks([{"speed": 1.0}] * 4)  # HalfCheetahDir tasks have a "direction"
    assert not any(process.is_alive() for process in env._processes)


def test_a_worker_that_stops_answering_times_out():
    env = _process_env()
    env.timeout_s = 1.0
    os.kill(env._processes[0].pid, signal.SIGSTOP)
    start = time.monotonic()
    with pytest.raises(MetaRLError, match=r"engine worker 0 .* did not answer 'step' within 1 s"):
        env.step(np.zeros((4, env.action_dim)))
    assert time.monotonic() - start < 10.0
    assert not any(process.is_alive() for process in env._processes)
