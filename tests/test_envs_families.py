"""Registry, task sampling, splits, Gymnasium ids, check_env and the oracle wrapper."""

from __future__ import annotations

import json
import random
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from conftest import FAMILY_NAMES
from metarl.envs.gym_ids import gym_id
from metarl.envs.oracle import TaskRevealingVectorEnv
from metarl.tasks import TaskSampler, get_family, list_families

# (num_train_tasks, num_test_tasks, horizon) from BENCHMARKS.md
TABLE = {
    "Navigation2D": (None, 40, 100),
    "PointRobot-Dense": (80, 20, 20),
    "PointRobot-Sparse": (80, 20, 20),
    "HalfCheetahVel-MAML": (None, 40, 200),
    "HalfCheetahVel-PEARL": (100, 30, 200),
    "HalfCheetahDir": (2, 2, 200),
    "AntVel": (None, 40, 200),
    "AntDir": (2, 2, 200),
    "AntDir2D": (100, 30, 200),
    "AntGoal": (150, 30, 200),
    "HumanoidDir": (100, 30, 200),
    "HopperRandParams": (40, 10, 200),
    "Walker2DRandParams": (40, 10, 200),
}


def _key(task: dict) -> str:
    return json.dumps(task, sort_keys=True)


def test_every_family_is_registered_with_a_citation():
    names = {family.name for family in list_families()}
    assert set(FAMILY_NAMES) <= names
    for name in FAMILY_NAMES:
        family = get_family(name)
        assert family.citation and family.description
        assert family.make_env is not None
        assert family.encode_task is not None
        num_train, num_test, horizon = TABLE[name]
        assert (family.num_train_tasks, family.num_test_tasks, family.max_episode_steps) == (
            num_train,
            num_test,
            horizon,
        )


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_sampling_is_reproducible_json_and_leaves_global_rngs_alone(name):
    family = get_family(name)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    first = family.sample_tasks(np.random.default_rng(3), 5)
    second = family.sample_tasks(np.random.default_rng(3), 5)
    assert [_key(t) for t in first] == [_key(t) for t in second]
    for task in first:
        assert json.loads(json.dumps(task)) == task
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(numpy_state[1:2], after[1:2]))
    assert numpy_state[2:] == after[2:]
    samplers = [TaskSampler(family, seed=7), TaskSampler(family, seed=7)]
    assert [_key(t) for t in samplers[0].held_out()] == [_key(t) for t in samplers[1].held_out()]
    assert [_key(t) for t in samplers[0].sample_train(4)] == [_key(t) for t in samplers[1].sample_train(4)]
    assert len(samplers[0].held_out()) == family.num_test_tasks


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_train_and_test_splits(name):
    family = get_family(name)
    sampler = TaskSampler(family, seed=0)
    test_keys = {_key(t) for t in sampler.test_tasks}
    if family.test_equals_train:
        assert {_key(t) for t in sampler.train_tasks} == test_keys == {_key(t) for t in family.fixed_tasks}
    elif sampler.train_tasks is None:  # MAML style: fresh draws every iteration
        assert _key(sampler.sample_train(1)[0]) != _key(sampler.sample_train(1)[0])
    else:
        train_keys = {_key(t) for t in sampler.train_tasks}
        assert len(train_keys) == family.num_train_tasks
        assert not train_keys & test_keys


def test_sparse_goals_lie_evenly_on_the_unit_half_circle():
    family = get_family("PointRobot-Sparse")
    goals = np.array([t["goal"] for t in family.fixed_tasks])
    np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1.0)
    angles = np.arctan2(goals[:, 1], goals[:, 0])
    np.testing.assert_allclose(np.diff(angles), np.pi / (len(goals) - 1), atol=1e-9)
    assert angles.min() >= -1e-12 and angles.max() <= np.pi + 1e-12


def test_ood_tasks_lie_outside_the_training_range():
    for name, low in [("HalfCheetahVel-MAML", 2.0), ("HalfCheetahVel-PEARL", 3.0), ("AntVel", 3.0)]:
        tasks = TaskSampler(get_family(name), seed=0).held_out("ood")
        assert min(t["velocity"] for t in tasks) >= low
    goals = TaskSampler(get_family("AntGoal"), seed=0).held_out("ood")
    assert min(np.linalg.norm(t["goal"]) for t in goals) >= 3.0


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_check_env_passes_on_the_single_env(name):
    family = get_family(name)
    task = family.sample_tasks(np.random.default_rng(0), 1)[0]
    env = family.make_env(task=task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_env's advice about unbounded boxes
        check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("name", ["PointRobot-Sparse", "HalfCheetahVel-PEARL", "AntGoal", "Walker2DRandParams"])
def test_gymnasium_id_makes_the_env_with_the_family_horizon(name):
    family = get_family(name)
    task = family.sample_tasks(np.random.default_rng(0), 1)[0]
    env = gymnasium.make(gym_id(name), task=task)
    assert env.spec.max_episode_steps == family.max_episode_steps
    assert env.unwrapped.task == task
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.close()


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_task_revealing_wrapper_appends_the_task_encoding(name):
    family = get_family(name)
    encode_task = family.encode_task
    tasks = family.sample_tasks(np.random.default_rng(1), 2)
    env = family.make_vector_env(2, seed=0)
    oracle = TaskRevealingVectorEnv(env, encode_task)
    assert oracle.observation_dim == env.observation_dim + encode_task.dim
    oracle.set_tasks(tasks)
    observations = oracle.reset()
    assert observations.shape == (2, oracle.observation_dim)
    np.testing.assert_array_equal(observations[:, env.observation_dim :], np.stack([encode_task(t) for t in tasks]))
    observations, *_ = oracle.step(np.zeros((2, env.action_dim), dtype=np.float32))
    assert observations.dtype == np.float32
    np.testing.assert_array_equal(observations[:, env.observation_dim :], np.stack([encode_task(t) for t in tasks]))
    oracle.close()
