"""Each family's reward is its paper's formula, rebuilt from the terms reported in ``info``;
goal tasks share physics and differ in reward; the task never enters the observation."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DYNAMICS_FAMILIES, GOAL_FAMILIES, MUJOCO_FAMILIES
from metarl.tasks import get_family


def paper_reward(name: str, task: dict, info: dict, action: np.ndarray) -> np.ndarray:
    """BENCHMARKS.md's per-step reward, from ``info`` entries (scalars or ``[B]`` arrays)."""
    square_action = np.square(np.asarray(action, dtype=np.float64)).sum(axis=-1)
    if name == "PointRobot-Dense":
        return -info["distance"]
    if name == "PointRobot-Sparse":
        return np.where(info["distance"] <= 0.2, 1.0 - info["distance"], 0.0)
    if name.startswith("HalfCheetah"):
        np.testing.assert_allclose(info["reward_ctrl"], -0.05 * square_action, rtol=1e-5)
        if name == "HalfCheetahDir":
            return task["direction"] * info["x_velocity"] - 0.05 * square_action
        return -np.abs(info["x_velocity"] - task["velocity"]) - 0.05 * square_action
    if name.startswith("Ant"):
        np.testing.assert_allclose(info["reward_ctrl"], -0.5 * square_action, rtol=1e-5)
        costs = 0.5 * square_action - info["reward_contact"]
        assert np.all(info["reward_contact"] <= 0.0)
        if name == "AntGoal":
            assert "reward_survive" not in info
            distance = np.abs(info["x_position"] - task["goal"][0]) + np.abs(info["y_position"] - task["goal"][1])
            return -distance - costs
        assert np.all(np.isin(info["reward_survive"], [0.0, 1.0]))
        if name == "AntVel":
            forward = -np.abs(info["x_velocity"] - task["velocity"])
        elif name == "AntDir":
            forward = task["direction"] * info["x_velocity"]
        else:
            angle = task["angle"]
            forward = info["x_velocity"] * np.cos(angle) + info["y_velocity"] * np.sin(angle)
        return forward + info["reward_survive"] - costs
    if name == "HumanoidDir":
        np.testing.assert_allclose(info["reward_ctrl"], -0.1 * square_action, rtol=1e-5)
        assert np.all(np.isin(info["reward_survive"], [0.0, 5.0]))
        assert np.all(-10.0 <= info["reward_contact"]) and np.all(info["reward_contact"] <= 0.0)
        angle = task["angle"]
        forward = 1.25 * (info["x_velocity"] * np.cos(angle) + info["y_velocity"] * np.sin(angle))
        return forward + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
    assert name.endswith("RandParams")
    np.testing.assert_allclose(info["reward_ctrl"], -1e-3 * square_action, rtol=1e-5)
    return info["x_velocity"] + info["reward_survive"] - 1e-3 * square_action


def _actions(env, rng: np.random.Generator) -> np.ndarray:
    scale = 0.4 if env.action_dim == 17 else 1.0  # keep the humanoid up for a few steps
    return (scale * rng.uniform(env.action_low, env.action_high, size=(env.num_envs, env.action_dim))).astype(np.float32)


@pytest.mark.parametrize("name", GOAL_FAMILIES + DYNAMICS_FAMILIES)
def test_vector_reward_is_the_paper_formula(name):
    family = get_family(name)
    tasks = family.sample_tasks(np.random.default_rng(0), 3)
    env = family.make_vector_env(3, seed=0)
    env.set_tasks(tasks)
    env.reset()
    rng = np.random.default_rng(1)
    for _ in range(15):
        actions = _actions(env, rng)
        _, rewards, terminated, _, infos = env.step(actions)
        for index, task in enumerate(tasks):
            info = {key: value[index] for key, value in infos.items()}
            expected = paper_reward(name, task, info, actions[index])
            np.testing.assert_allclose(rewards[index], expected, rtol=1e-5, atol=1e-5)
        if name == "AntGoal":
            assert not terminated.any()
    env.close()


@pytest.mark.parametrize("name", MUJOCO_FAMILIES)
def test_single_env_reward_is_the_paper_formula(name):
    family = get_family(name)
    task = family.sample_tasks(np.random.default_rng(2), 1)[0]
    env = family.make_env(task=task)
    env.reset(seed=0)
    rng = np.random.default_rng(3)
    for _ in range(10):
        action = (0.4 * env.action_space.sample() if name == "HumanoidDir" else rng.uniform(-1, 1, env.action_space.shape)).astype(np.float32)
        _, reward, _, _, info = env.step(action)
        terms = sum(value for key, value in info.items() if key.startswith("reward_"))
        assert reward == pytest.approx(terms, rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(reward, paper_reward(name, task, info, action), rtol=1e-5, atol=1e-5)
    env.close()


@pytest.mark.parametrize("name", GOAL_FAMILIES)
def test_goal_tasks_share_physics_and_differ_in_reward(name):
    family = get_family(name)
    first, second = family.sample_tasks(np.random.default_rng(4), 2)
    if name in ("HalfCheetahDir", "AntDir"):
        first, second = {"direction": -1}, {"direction": 1}
    if name == "PointRobot-Sparse":  # opposite ends of the half-circle, and walk to the first
        first, second = family.fixed_tasks[0], family.fixed_tasks[-1]
    envs = [family.make_vector_env(1, seed=0) for _ in range(2)]
    for env, task in zip(envs, (first, second)):
        env.set_tasks([task])
    observations = [env.reset(seed=5) for env in envs]
    np.testing.assert_array_equal(observations[0], observations[1])
    rng = np.random.default_rng(6)
    reward_gap = 0.0
    for _ in range(10):
        actions = _actions(envs[0], rng)
        if name == "PointRobot-Sparse":
            actions = 0.1 * np.asarray([first["goal"]], dtype=np.float32)
        (obs_a, reward_a, *_), (obs_b, reward_b, *_) = (env.step(actions) for env in envs)
        np.testing.assert_array_equal(obs_a, obs_b)  # the task never shows in observations
        reward_gap += float(np.abs(reward_a - reward_b).sum())
    assert reward_gap > 1e-3
    for env in envs:
        env.close()


@pytest.mark.parametrize("name", ["HalfCheetahVel-MAML", "AntVel", "HumanoidDir", "HopperRandParams"])
def test_observation_matches_gymnasium_v5(name):
    import gymnasium

    base = {"HalfCheetahVel-MAML": "HalfCheetah-v5", "AntVel": "Ant-v5", "HumanoidDir": "Humanoid-v5", "HopperRandParams": "Hopper-v5"}[name]
    reference = gymnasium.make(base)
    family = get_family(name)
    env = family.make_vector_env(1)
    assert env.observation_dim == reference.observation_space.shape[0]
    assert env.action_dim == reference.action_space.shape[0]
    reference.close()
    env.close()
