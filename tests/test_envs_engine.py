"""The fast MuJoCo engine reproduces the Gymnasium reference engine step for step."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MUJOCO_FAMILIES
from metarl.envs.engine import ENGINES, MujocoVectorEnv
from metarl.tasks import MetaRLError, get_family
from metarl.vector_env import GymVectorTaskEnv, VectorTaskEnv

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


@pytest.mark.parametrize("engine", ["threads", "serial"])
@pytest.mark.parametrize("name", MUJOCO_FAMILIES)
def test_fast_engine_equals_reference_engine(name, engine):
    family = get_family(name)
    reference = family.make_vector_env(NUM_ENVS, seed=3, engine="gym", max_episode_steps=12)
    fast = family.make_vector_env(NUM_ENVS, seed=3, engine=engine, max_episode_steps=12)
    assert isinstance(reference, GymVectorTaskEnv) and isinstance(fast, MujocoVectorEnv)
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
