"""Dynamics families: multipliers land in the model, physics changes, defaults restore exactly."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from metarl.envs.engine import load_model
from metarl.envs.rand_params import PARAMETER_NAMES, XML_FILES, default_task
from metarl.tasks import get_family

FAMILIES = {"HopperRandParams": "hopper", "Walker2DRandParams": "walker2d"}
DERIVED = ("body_subtreemass", "dof_invweight0", "body_invweight0", "actuator_acc0")


def _rollout(env, num_steps: int = 30) -> np.ndarray:
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(num_steps, env.action_space.shape[0]))
    return np.stack([env.step(action.astype(np.float32))[0] for action in actions])


@pytest.mark.parametrize("name", FAMILIES)
def test_sampled_multipliers_follow_the_paper_ranges(name):
    tasks = get_family(name).sample_tasks(np.random.default_rng(0), 20)
    for key, base in [("body_mass", 1.5), ("body_inertia", 1.5), ("geom_friction", 1.5), ("dof_damping", 1.3)]:
        values = np.concatenate([np.ravel(t[key]) for t in tasks])
        exponents = np.log(values) / np.log(base)
        assert exponents.min() >= -3.0 and exponents.max() <= 3.0
        assert exponents.max() - exponents.min() > 4.0  # per element, spread over the range
    first = np.asarray(tasks[0]["body_inertia"])
    assert first.shape == load_model(XML_FILES[FAMILIES[name]]).body_inertia.shape
    assert len(np.unique(first)) == first.size  # one multiplier per element


@pytest.mark.parametrize("name", FAMILIES)
def test_doubled_mass_shows_in_subtree_mass_and_trajectory(name):
    robot = FAMILIES[name]
    family = get_family(name)
    env = family.make_env()
    model = env.unwrapped.model
    default_mass = model.body_mass.copy()
    default_subtree = model.body_subtreemass.copy()
    baseline = _rollout(env)
    heavy = default_task(robot)
    heavy["body_mass"][1] = 2.0  # the torso
    env.unwrapped.set_task(heavy)
    assert model.body_mass[1] == 2.0 * default_mass[1]
    # mj_setConst recomputed the derived masses: world and torso subtrees gain the torso's mass.
    assert model.body_subtreemass[0] == pytest.approx(default_subtree[0] + default_mass[1])
    assert model.body_subtreemass[1] == pytest.approx(default_subtree[1] + default_mass[1])
    assert not np.allclose(_rollout(env), baseline)
    env.close()


@pytest.mark.parametrize("name", FAMILIES)
def test_restoring_defaults_is_exact_and_tasks_do_not_compound(name):
    robot = FAMILIES[name]
    family = get_family(name)
    env = family.make_env()
    model = env.unwrapped.model
    pristine = load_model(XML_FILES[robot])
    first, second = family.sample_tasks(np.random.default_rng(1), 2)
    env.unwrapped.set_task(first)
    env.unwrapped.set_task(second)
    for key in PARAMETER_NAMES:  # written from the defaults, not on top of the first task
        np.testing.assert_array_equal(getattr(model, key), getattr(pristine, key) * np.asarray(second[key]))
    env.unwrapped.set_task(default_task(robot))
    for key in PARAMETER_NAMES + DERIVED:
        np.testing.assert_array_equal(getattr(model, key), getattr(pristine, key))
    env.close()


@pytest.mark.parametrize("name", FAMILIES)
def test_dynamics_tasks_change_physics_in_the_vector_engine(name):
    family = get_family(name)
    robot = FAMILIES[name]
    light, heavy = default_task(robot), default_task(robot)
    heavy["body_mass"][1] = 2.0
    env = family.make_vector_env(2, seed=0)
    env.set_tasks([light, heavy])
    assert env.models[0] is not env.models[1]
    assert env.models[1].body_subtreemass[1] == pytest.approx(2.0 * env.models[0].body_mass[1] + env.models[0].body_subtreemass[1] - env.models[0].body_mass[1])
    env.reset(seed=0)
    env.datas[1].qpos[:] = env.datas[0].qpos
    env.datas[1].qvel[:] = env.datas[0].qvel
    mujoco.mj_forward(env.models[1], env.datas[1])
    for _ in range(20):
        observations, *_ = env.step(np.full((2, env.action_dim), 0.5, dtype=np.float32))
    assert not np.allclose(observations[0], observations[1])
    env.close()
