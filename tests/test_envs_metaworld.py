"""Meta-World adapter: runs only with the optional ``metaworld`` extra installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from metarl.envs import metaworld as metaworld_adapter
from metarl.tasks import MetaRLError, TaskSampler, get_family, list_families


@pytest.mark.skipif(importlib.util.find_spec("metaworld") is not None, reason="metaworld is installed")
def test_without_the_extra_nothing_is_registered_and_the_error_says_how_to_install():
    assert not metaworld_adapter.available()
    assert not any(family.name.startswith(("ML1-", "ML10", "ML45")) for family in list_families())
    with pytest.raises(MetaRLError, match=r"metarl\[metaworld\]"):
        metaworld_adapter.metaworld_family("ML10")


def test_ml1_serves_the_benchmark_split_with_success_in_infos():
    pytest.importorskip("metaworld")
    family = get_family("ML1-reach-v3")
    sampler = TaskSampler(family, seed=0)
    assert len(sampler.train_tasks) == family.num_train_tasks == 50
    assert len(sampler.test_tasks) == family.num_test_tasks == 50
    assert {t["split"] for t in sampler.train_tasks} == {"train"}
    assert {t["split"] for t in sampler.test_tasks} == {"test"}
    env = family.make_vector_env(2, seed=0)
    env.set_tasks(sampler.sample_train(2))
    observations = env.reset()
    assert observations.shape == (2, env.observation_dim)
    _, rewards, _, _, infos = env.step(np.zeros((2, env.action_dim), dtype=np.float32))
    assert rewards.shape == (2,)
    assert infos["success"].shape == (2,)
    env.close()


def test_ml10_test_environments_differ_from_training_environments():
    pytest.importorskip("metaworld")
    sampler = TaskSampler(get_family("ML10"), seed=0)
    train_names = {t["env_name"] for t in sampler.train_tasks}
    test_names = {t["env_name"] for t in sampler.test_tasks}
    assert len(train_names) == 10 and len(test_names) == 5
    assert not train_names & test_names
