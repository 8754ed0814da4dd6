"""The command line as a user meets it: one-line errors with exit status 2, no tracebacks."""

import json
import subprocess
import sys

import pytest

from conftest import TINY
from metarl.cli import main


@pytest.mark.parametrize("argv, message", [
    (["train", "bogus_key=1"], "unknown config key 'bogus_key'; accepted:"),
    (["train", "env=Nowhere"], "unknown env 'Nowhere', neither an RL task family nor a supervised task source; accepted: "),
    (["train", "agent=dqn"], "unknown agent 'dqn'; accepted: "),
    (["train", "no_such_config.yaml"], "config file 'no_such_config.yaml' not found"),
    (["train", "seed=1", "a.b=c"], "unknown config key 'a'"),
    (["evaluate", "/nonexistent/run"], "run directory '/nonexistent/run' does not exist"),
    (["frobnicate"], "invalid choice"),
    (["train", "--ray-address", "auto"], "--ray-address runs the seeds of --seeds on Ray"),
    (["train", "env_options.engine=warp", "progress=false"], "unknown engine 'warp' for Navigation2D"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err, err
    assert "Traceback" not in err


def test_malformed_override_via_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "metarl", "train", "seed=1", "evaluation..x=2"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "malformed override" in result.stderr and "Traceback" not in result.stderr


def test_list_shows_families_agents_configs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Navigation2D" in out and "maml_trpo" in out and "shipped configs" in out


def test_train_then_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, f"run_dir={run_dir}"]) == 0
    assert main(["evaluate", str(run_dir), "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "gradient steps" in out and "held-out tasks" in out
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["seeds"] == [0, 1] and len(result["stages"]) == 2
    assert len(result["stages"][0]["per_task_return"]) == 8  # 4 tasks x 2 seeds
