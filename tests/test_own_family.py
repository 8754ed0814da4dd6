"""The README's "your own task family" example runs exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from metarl.tasks import TaskSampler, get_family

DOC = Path(__file__).resolve().parents[1] / "README.md"


def _example_code() -> str:
    section = DOC.read_text().split("## Your own task family", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the section has exactly one Python example"
    return blocks[0]


def test_own_family_example_registers_samples_steps_and_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_example_code(), str(DOC), "exec"), namespace)  # runs the rollout and training it shows
    run_dir = namespace["run_dir"]
    assert (tmp_path / run_dir / "checkpoints" / "iteration_000002.pt").is_file()
    family = get_family("SwimmerVel")
    assert family is namespace["SWIMMER_VEL"]
    first, second = TaskSampler(family, seed=0), TaskSampler(family, seed=0)
    assert first.test_tasks == second.test_tasks
    train_keys = {t["velocity"] for t in first.train_tasks}
    assert len(first.test_tasks) == 10 and not train_keys & {t["velocity"] for t in first.test_tasks}
    envs = family.make_vector_env(2, seed=0)
    envs.set_tasks([{"velocity": 0.0}, {"velocity": 0.3}])
    envs.reset(seed=1)
    actions = np.full((2, envs.action_dim), 0.5, dtype=np.float32)
    _, rewards, _, _, infos = envs.step(actions)
    np.testing.assert_allclose(rewards, infos["reward_velocity"] + infos["reward_ctrl"], rtol=1e-6)
    envs.close()


def test_one_call_registers_the_family_with_typed_fields():
    """``register_family(TaskFamily(...))`` is the whole registration: the name for metarl, the
    Gymnasium id (the returned family's ``gym_id``), and the typed task encoder."""
    import dataclasses

    import gymnasium

    from metarl.envs.oracle import vector_encoder
    from metarl.tasks import register_family

    base = get_family("PointRobot-Dense")
    assert base.gym_id == "metarl/PointRobot-Dense-v0" and base.encode_task.dim == 2
    family = register_family(dataclasses.replace(base, name="OneCallPoint", gym_id=None,
                                                 encode_task=vector_encoder("goal", 2)))
    assert family.gym_id == "metarl/OneCallPoint-v0" and get_family("OneCallPoint") is family
    env = gymnasium.make(family.gym_id, task={"goal": [0.5, 0.5]})
    assert env.spec.max_episode_steps == base.max_episode_steps
    env.close()


def test_a_family_module_written_the_old_way_keeps_working_with_a_warning():
    import dataclasses

    import pytest

    from metarl.envs.gym_ids import register_gym_id
    from metarl.envs.oracle import vector_encoder
    from metarl.tasks import MetaRLError, register_family

    base = get_family("PointRobot-Dense")
    with pytest.warns(DeprecationWarning, match=r"metadata\['encode_task'\] is now the field"):
        old = dataclasses.replace(base, name="OldPoint", gym_id=None, encode_task=None,
                                  metadata={"encode_task": vector_encoder("goal", 2)})
    with pytest.warns(DeprecationWarning, match="register_gym_id is no longer needed"):
        family = register_gym_id(register_family(old))
    assert family.encode_task.dim == 2 and "encode_task" not in family.metadata
    assert family.gym_id == "metarl/OldPoint-v0" and get_family("OldPoint") is family
    with pytest.raises(MetaRLError, match="gives its task encoder twice"):
        dataclasses.replace(base, metadata={"encode_task": vector_encoder("goal", 2)})
