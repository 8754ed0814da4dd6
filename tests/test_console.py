"""A quiet console: known library warnings are dropped at their source, real ones shown once."""

import subprocess
import sys
import warnings

import mujoco
import numpy as np
import pytest

import metarl.envs  # noqa: F401  (installs the MuJoCo warning handler)
from metarl.console import MuJoCoWarning, handle_mujoco_warning

PENDULUM = """<mujoco><worldbody><body><joint type="hinge"/><geom size=".1"/></body></worldbody></mujoco>"""


def test_a_real_mujoco_warning_is_shown_once():
    model = mujoco.MjModel.from_xml_string(PENDULUM)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # each new MjData warns again in C; Python sees it once
            data = mujoco.MjData(model)
            data.qvel[:] = np.nan
            mujoco.mj_step(model, data)
    unstable = [w for w in caught if issubclass(w.category, MuJoCoWarning)]
    assert len(unstable) == 1, [str(w.message) for w in caught]
    assert "QVEL" in str(unstable[0].message)


def test_known_gymnasium_asset_warning_is_dropped():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handle_mujoco_warning("compiler attribute 'settotalmass' is deprecated and will be removed")
        handle_mujoco_warning("an unknown problem at time 1.5")
        handle_mujoco_warning("an unknown problem at time 2.5")  # the same message, other numbers
    assert [str(w.message) for w in caught] == ["MuJoCo: an unknown problem at time 1.5"]


@pytest.mark.parametrize("engine", ["threads", pytest.param("processes", marks=pytest.mark.slow)])
def test_half_cheetah_training_prints_no_repeated_warning(tmp_path, engine):
    """``metarl train maml_trpo_half_cheetah_vel num_iterations=1``, shrunk to seconds: every
    line of the console output is distinct, and MuJoCo writes no log file into the cwd."""
    result = subprocess.run(
        [sys.executable, "-m", "metarl", "train", "maml_trpo_half_cheetah_vel", "num_iterations=1",
         "agent_options.meta_batch_size=2", "agent_options.episodes_per_task=2",
         "evaluation.num_tasks=2", "evaluation.num_stages=1", "evaluation.episodes_per_stage=2",
         f"env_options.engine={engine}", f"run_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), lines
    assert "settotalmass" not in result.stdout + result.stderr
    assert "warning" not in (result.stdout + result.stderr).lower()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
