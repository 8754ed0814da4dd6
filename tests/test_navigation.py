import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from metarl.envs.navigation import NavigationEnv, NavigationVectorEnv
from metarl.tasks import MetaRLError


def test_actions_are_clipped_and_reward_is_negative_distance():
    env = NavigationVectorEnv(2)
    env.set_tasks([{"goal": [0.3, 0.0]}, {"goal": [-0.2, 0.1]}])
    obs = env.reset()
    np.testing.assert_allclose(obs, 0.0)
    obs, rewards, terminated, truncated, info = env.step(np.array([[1.0, 0.0], [-0.05, 0.05]]))
    np.testing.assert_allclose(obs, [[0.1, 0.0], [-0.05, 0.05]], atol=1e-7)
    np.testing.assert_allclose(rewards, [-0.2, -np.hypot(0.15, 0.05)], rtol=1e-6)
    np.testing.assert_allclose(info["reward_distance"], rewards)
    assert not terminated.any() and not truncated.any()


def test_termination_near_goal_and_truncation_at_horizon():
    env = NavigationVectorEnv(2, max_episode_steps=3)
    env.set_tasks([{"goal": [0.1, 0.1]}, {"goal": [0.45, 0.45]}])
    env.reset()
    _, _, terminated, truncated, _ = env.step(np.full((2, 2), 0.1))
    assert terminated.tolist() == [True, False] and not truncated.any()
    env.step(np.zeros((2, 2)))
    _, _, terminated, truncated, _ = env.step(np.zeros((2, 2)))
    assert truncated.tolist() == [False, True]


def test_same_actions_different_goals_same_positions_different_rewards():
    env = NavigationVectorEnv(2)
    env.set_tasks([{"goal": [0.3, 0.3]}, {"goal": [-0.3, 0.2]}])
    env.reset()
    obs, rewards, *_ = env.step(np.full((2, 2), 0.05))
    np.testing.assert_array_equal(obs[0], obs[1])
    assert rewards[0] != rewards[1]


def test_shape_errors_are_clear():
    env = NavigationVectorEnv(3)
    with pytest.raises(MetaRLError, match="3 sub-environments"):
        env.set_tasks([{"goal": [0, 0]}])
    env.reset()
    with pytest.raises(MetaRLError, match=r"expected \(3, 2\)"):
        env.step(np.zeros((2, 2)))


def test_gymnasium_env_checker_passes():
    check_env(NavigationEnv({"goal": [0.2, -0.1]}), skip_render_check=True)

