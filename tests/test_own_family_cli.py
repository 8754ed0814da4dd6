"""A family in the user's own module trains, resumes, evaluates and compares from the plain
``metarl`` command: ``--import`` once, recorded in the run's config."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import TINY

MODULE = textwrap.dedent('''
    """A plain (non-MuJoCo) family of the user's own: the point robot under another name."""
    import dataclasses

    from metarl.tasks import get_family, register_family

    MY_POINT = register_family(dataclasses.replace(get_family("PointRobot-Dense"), name="MyPoint"))
''')


def _metarl(*args, cwd):
    command = shutil.which("metarl") or "metarl"
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if not Path(command).is_file():  # no console script on PATH: the module entry point
        command = [sys.executable, "-m", "metarl"]
    else:
        command = [command]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=300)


def test_own_family_trains_resumes_evaluates_and_compares_from_the_command(tmp_path):
    (tmp_path / "my_family.py").write_text(MODULE)
    tiny = [item for item in TINY if not item.startswith("num_iterations")]
    unknown = _metarl("train", "env=MyPoint", *tiny, "run_dir=run", cwd=tmp_path)
    assert unknown.returncode == 2 and "--import MODULE" in unknown.stderr
    trained = _metarl("train", "env=MyPoint", "--import", "my_family", *tiny, "num_iterations=2",
                      "run_dir=run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "imports:\n- my_family" in (tmp_path / "run" / "config.yaml").read_text()
    resumed = _metarl("train", "--resume", "run", "num_iterations=3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "run" / "checkpoints" / "iteration_000003.pt").is_file()
    evaluated = _metarl("evaluate", "run", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    compared = _metarl("compare", "run", "--output", "compare.png", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert "MyPoint" in compared.stdout and (tmp_path / "compare.png").is_file()


def test_installed_family_is_found_through_its_entry_point(monkeypatch):
    import dataclasses
    import importlib.metadata

    from metarl.tasks import ENTRY_POINT_GROUP, get_family, register_family

    class FakeEntryPoint:
        def load(self):
            register_family(dataclasses.replace(get_family("PointRobot-Dense"), name="InstalledPoint"))

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None, **kwargs: (
        [FakeEntryPoint()] if group == ENTRY_POINT_GROUP else real(group=group, **kwargs)))
    assert get_family("InstalledPoint").name == "InstalledPoint"
