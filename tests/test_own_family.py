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
