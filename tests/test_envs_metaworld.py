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
    with pytest.raises(MetaRLError, match=r"'ML1-reach-v3' is Meta-World's.*metarl\[metaworld\]"):
        get_family("ML1-reach-v3")


SHIPPED_METAWORLD_CONFIGS = [f"{agent}_{family}" for agent in ("maml_trpo", "rl2", "pearl")
                             for family in ("ml1_reach", "ml1_push", "ml1_pick_place", "ml10", "ml45")]


def test_list_names_the_metaworld_configs_with_or_without_the_extra(monkeypatch, capsys):
    """Issue 12: `metarl list` (and `--configs`) name the 15 shipped Meta-World configs; without
    the extra (simulated here) they are still listed, marked as needing it, and their budget is
    not computed (it needs the family)."""
    from metarl.cli import main

    assert main(["list"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert set(SHIPPED_METAWORLD_CONFIGS) <= listed
    monkeypatch.setattr(metaworld_adapter, "metaworld", None)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "rl2_ml1_reach  (ML1-reach-v3: needs the metaworld extra)" in out
    assert "pip install 'metarl[metaworld]'" in out
    assert main(["list", "--configs"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name in SHIPPED_METAWORLD_CONFIGS:
        assert "(budget: needs the metaworld extra)" in rows[name], rows[name]
    assert "needs the metaworld extra" not in rows["maml_trpo_navigation"]


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


def test_ml10_mixed_classes_step_identically_on_worker_processes():
    """Meta-World's per-step cost (~0.3-0.6 ms) is what worker processes are for: ``auto`` picks
    them, and they reproduce the in-process list exactly, reward terms of mixed classes too."""
    pytest.importorskip("metaworld")
    from metarl.envs.parallel import build_vector_env
    from metarl.envs.processes import ProcessVectorEnv

    family = get_family("ML10")
    train = TaskSampler(family, seed=0).train_tasks
    tasks = [train[i * 50] for i in range(8)]  # 8 different classes, 4 per worker
    assert len({t["env_name"] for t in tasks}) == 8
    outputs = []
    for engine in ("serial", "processes"):
        env = build_vector_env(family, 8, seed=3, engine=engine, num_workers=2) if engine == "processes" \
            else build_vector_env(family, 8, seed=3, engine=engine)
        env.set_tasks(tasks)
        record = [env.reset()]
        rng = np.random.default_rng(0)
        for _ in range(10):
            observations, rewards, terminated, truncated, infos = env.step(
                rng.uniform(-1, 1, size=(8, env.action_dim)))
            record += [observations, rewards, terminated, truncated, infos["success"]]
        outputs.append(record)
        env.close()
    for serial, parallel in zip(*outputs):
        np.testing.assert_array_equal(serial, parallel)
    auto = build_vector_env(family, 8, num_workers=2)
    assert isinstance(auto, ProcessVectorEnv)
    auto.close()


def _record(env, tasks, seed: int, num_steps: int = 15) -> list[np.ndarray]:
    env.set_tasks(tasks)
    record = [env.reset(seed=seed)]
    rng = np.random.default_rng(1)
    for _ in range(num_steps):
        observations, rewards, _, _, infos = env.step(rng.uniform(-1, 1, size=(len(tasks), env.action_dim)))
        record += [observations, rewards, infos["success"]]
    return record


def test_sub_envs_share_class_objects_and_results_do_not_depend_on_which_one_serves():
    """Sub-envs hand an environment object back when their class changes and take an idle one of
    the new class (memory stays within twice the sub-envs; before, a sub-env kept one ~20 MB object
    of every class it had met). Which object serves a task leaves the numbers unchanged."""
    pytest.importorskip("metaworld")
    family = get_family("ML10")
    train = TaskSampler(family, seed=0).train_tasks
    by_class: dict[str, list] = {}
    for task in train:
        by_class.setdefault(task["env_name"], []).append(task)
    a, b, c = (by_class[name] for name in sorted(by_class)[:3])
    env = family.make_vector_env(2, seed=0, idle_objects=2)
    _record(env, [a[0], b[0]], seed=4, num_steps=5)
    # sub-env 1 now serves class a with the object sub-env 0 used (and a new goal); sub-env 0 class c
    history = _record(env, [c[1], a[2]], seed=7)
    pool = env.envs[0]._pool
    assert pool is env.envs[1]._pool
    built = pool.num_built
    _record(env, [a[3], c[4]], seed=7, num_steps=1)  # the same classes swapped: nothing new built
    assert pool.num_built == built
    for rounds in range(4):  # every class in turn: idle objects stay within max_idle
        _record(env, [by_class[name][rounds] for name in sorted(by_class)[2 * rounds:2 * rounds + 2]], seed=0,
                num_steps=1)
        assert len(pool._idle) <= pool.max_idle == 2
    env.close()
    assert not pool._idle
    fresh = family.make_vector_env(2, seed=0)
    for reused, new in zip(history, _record(fresh, [c[1], a[2]], seed=7)):
        np.testing.assert_array_equal(reused, new)
    fresh.close()


def test_ml1_sub_envs_keep_their_object_between_train_and_test_goals():
    """ML1's train and test goals are one class: a sub-env moving between them keeps its object
    (before, the pool keyed objects by split too, and a vector env that served both, as MAML's
    training and its evaluation's adaptation stage do, held two objects a sub-env: ~44 MB).
    The test goals' numbers are a fresh env's."""
    pytest.importorskip("metaworld")
    family = get_family("ML1-reach-v3")
    sampler = TaskSampler(family, seed=0)
    train, test = sampler.train_tasks, sampler.test_tasks
    env = family.make_vector_env(2, seed=0)
    pool = env.envs[0]._pool
    _record(env, train[:2], seed=3, num_steps=2)
    assert pool.num_built == 2
    held_out = _record(env, test[:2], seed=5)
    _record(env, [train[2], test[3]], seed=3, num_steps=2)
    assert pool.num_built == 2 and not pool._idle
    env.close()
    fresh = family.make_vector_env(2, seed=0)
    for reused, new in zip(held_out, _record(fresh, test[:2], seed=5)):
        np.testing.assert_array_equal(reused, new)
    fresh.close()


def test_idle_objects_option_caps_the_pool_and_bad_values_are_errors(tmp_path):
    """``env_options.idle_objects``: the objects a vector env keeps idle (unset: a quarter of its
    sub-envs; before, one per sub-env, which on ML45 doubled the memory for little reuse), passed
    to the workers of the processes engine too; a bad value is an error naming the key."""
    pytest.importorskip("metaworld")
    from metarl.config import load_config
    from metarl.envs.parallel import build_vector_env, check_env_options
    from metarl.train import build_run

    family = get_family("ML10")
    check_env_options(family, {"idle_objects": 3})
    for options, expected in (({}, 2), ({"idle_objects": 0}, 0), ({"idle_objects": 5}, 5)):
        env = family.make_vector_env(8, seed=0, **options)
        assert env.envs[0]._pool.max_idle == expected
        env.close()
    env = build_vector_env(family, 8, seed=0, engine="processes", num_workers=2, idle_objects=1)
    try:
        env.set_tasks(TaskSampler(family, seed=0).train_tasks[:8])
        env.reset(seed=0)  # the workers built their envs with the option
    finally:
        env.close()
    for bad in (-1, 1.5, True, "many"):
        with pytest.raises(MetaRLError, match="idle_objects must be an integer >= 0"):
            family.make_vector_env(2, seed=0, idle_objects=bad)
    config = load_config(None, ["env=ML10", "agent=rl2", "env_options.idle_objects=-2",
                                f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(MetaRLError, match="idle_objects"):
        build_run(config).close()


def test_step_after_set_task_without_reset_is_an_error():
    pytest.importorskip("metaworld")
    family = get_family("ML10")
    train = TaskSampler(family, seed=0).train_tasks
    env = family.make_env(task=train[0])
    env.reset(seed=0)
    env.set_task(train[-1])
    with pytest.raises(MetaRLError, match="reset"):
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    env.close()
