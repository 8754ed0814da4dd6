"""Policies act in [-1, 1]: families whose box is not ±1 rescale and clip (every agent, every
engine, through the Sampler); ±1 families are untouched; collection runs on one torch thread."""

import numpy as np
import pytest
import torch
import yaml

from metarl.action_scaling import UnitActionVectorEnv, with_unit_actions
from metarl.config import load_config
from metarl.logger import read_metrics
from metarl.rollout import Sampler, torch_threads
from metarl.tasks import get_family
from metarl.train import train


@pytest.mark.parametrize("name", ["Navigation2D", "PointRobot-Dense", "PointRobot-Sparse"])
def test_point_mass_families_take_unit_actions_rescaled_onto_their_box(name):
    sampler = Sampler(get_family(name), seed=0)
    env = sampler.env(4)
    assert isinstance(env, UnitActionVectorEnv)
    np.testing.assert_array_equal(env.action_low, [-1, -1])
    np.testing.assert_array_equal(env.action_high, [1, 1])
    env.set_tasks([{"goal": [0.5, 0.5]}] * 4)
    env.reset(seed=0)
    # 1 -> the box's top (0.1), 0.5 -> 0.05, beyond 1 clipped, -1 -> the bottom.
    positions, *_ = env.step(np.array([[1.0, 0.5], [5.0, -7.0], [-1.0, 0.0], [0.0, -0.25]]))
    np.testing.assert_allclose(positions, [[0.1, 0.05], [0.1, -0.1], [-0.1, 0.0], [0.0, -0.025]], atol=1e-7)
    sampler.close()


def test_unit_box_families_and_the_switch_off_are_untouched():
    cheetah = Sampler(get_family("HalfCheetahVel-MAML"), seed=0)
    assert not isinstance(cheetah.env(1), UnitActionVectorEnv)
    cheetah.close()
    raw = Sampler(get_family("Navigation2D"), seed=0, unit_actions=False).env(1)
    np.testing.assert_allclose(raw.action_high, [0.1, 0.1])


def test_an_unbounded_box_is_left_as_it_is():
    env = get_family("Navigation2D").make_vector_env(1)
    env.action_low, env.action_high = np.full(2, -np.inf), np.full(2, np.inf)
    assert with_unit_actions(env) is env


def test_the_run_config_records_unit_actions(tmp_path):
    config = load_config(None, ["agent=random", "num_iterations=1", "evaluation.num_tasks=2",
                                "evaluation.num_stages=0", "evaluation.episodes_per_stage=1",
                                f"run_dir={tmp_path / 'run'}"])
    run_dir = train(config, quiet=True)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["unit_actions"] is True


class ThreadProbe:
    """An actor that records the torch thread count it acts with."""

    def __init__(self):
        self.threads = set()

    def act(self, observations):
        self.threads.add(torch.get_num_threads())
        return torch.zeros(observations.shape[0], 2)


def test_collection_runs_on_one_thread_and_restores_the_callers_count():
    family = get_family("Navigation2D")
    sampler = Sampler(family, seed=0)
    probe = ThreadProbe()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        sampler.sample([{"goal": [0.1, 0.2]}], probe, episodes_per_task=2)
        assert probe.threads == {1}
        assert torch.get_num_threads() == 2
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
        sampler.close()


def test_train_restores_the_callers_thread_count(tmp_path):
    previous = torch.get_num_threads()
    config = load_config(None, ["agent=random", "num_iterations=1", "torch_threads=2",
                                "evaluation.interval=0", "evaluation.num_tasks=2",
                                "evaluation.num_stages=0", "evaluation.episodes_per_stage=1",
                                f"run_dir={tmp_path / 'run'}"])
    torch.set_num_threads(1)
    try:
        train(config, quiet=True)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("agent", ["rl2", "pearl"])
def test_agents_that_already_acted_in_the_unit_box_learn_the_same_with_or_without_scaling(agent, tmp_path):
    """RL² and PEARL mapped their own ``[-1, 1]`` actions onto the box before issue 15; with
    ``unit_actions`` the sampler's map does it instead, so their runs (and the RESULTS rows on
    2D navigation and the point robots) are the same up to float rounding.  Scaling twice, or
    not at all, would move the returns by far more than the tolerance."""
    from test_pearl import TINY_PEARL
    from test_rl2 import RL2_TINY
    from test_run_dirs import strip

    options = {"rl2": ["env=Navigation2D", *RL2_TINY], "pearl": TINY_PEARL}[agent]
    options = [*options, "num_iterations=2", "evaluation.interval=1"]
    runs = {}
    for unit_actions in (True, False):
        config = load_config(None, [*options, f"unit_actions={str(unit_actions).lower()}",
                                    f"run_dir={tmp_path / str(unit_actions)}"])
        runs[unit_actions] = strip(read_metrics(train(config, quiet=True)))
    scaled, unscaled = runs[True], runs[False]
    assert [sorted(m) for m in scaled] == [sorted(m) for m in unscaled]
    for a, b in zip(scaled, unscaled):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key
    returns = [key for key in scaled[-1] if "return" in key]
    assert len(returns) >= 2, returns  # training and held-out returns were compared
