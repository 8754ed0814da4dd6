"""Many seeds in one command: each seed's run is the single-seed run; resume finishes the
unfinished ones exactly; compare pools the group's seeds."""

import json
import shutil

import pytest

from conftest import TINY
from metarl.cli import main
from metarl.logger import read_metrics

SEEDS = [0, 1, 2]


def _metrics(run_dir):
    """Every logged scalar except wall-clock timings."""
    return [{k: v for k, v in record.items() if not k.startswith("time/")} for record in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    assert main(["train", *TINY, "--seeds", *map(str, SEEDS), f"run_dir={root / 'group'}", "--workers", "2"]) == 0
    for seed in SEEDS:
        assert main(["train", *TINY, f"seed={seed}", f"run_dir={root / f'single{seed}'}"]) == 0
    return root


def test_each_seed_of_a_group_is_the_single_seed_run(runs):
    assert sorted(p.name for p in (runs / "group").iterdir()) == [
        "group.json", "group_config.yaml", "seed0", "seed1", "seed2"]
    for seed in SEEDS:
        group_metrics = _metrics(runs / "group" / f"seed{seed}")
        assert len(group_metrics) == 3
        assert group_metrics == _metrics(runs / f"single{seed}")
    assert _metrics(runs / "group" / "seed0") != _metrics(runs / "group" / "seed1")


def test_resume_finishes_only_the_unfinished_seeds_exactly(runs, tmp_path, capsys):
    group = tmp_path / "group"
    shutil.copytree(runs / "group", group)
    for path in (group / "seed1" / "checkpoints").glob("iteration_00000[23].pt"):
        path.unlink()  # seed 1 stopped after its first checkpoint
    shutil.rmtree(group / "seed2" / "checkpoints")  # seed 2 stopped before any
    finished = (group / "seed0" / "metrics.jsonl").stat().st_mtime_ns
    assert main(["train", "--resume", str(group)]) == 0
    assert "seeds [1, 2]" in capsys.readouterr().err
    assert (group / "seed0" / "metrics.jsonl").stat().st_mtime_ns == finished
    for seed in SEEDS:
        assert _metrics(group / f"seed{seed}") == _metrics(runs / f"single{seed}")
    assert main(["train", "--resume", str(group)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_compare_on_a_group_reports_statistics_over_seeds(runs, tmp_path, capsys):
    pytest.importorskip("rliable")
    output = tmp_path / "compare.png"
    assert main(["compare", str(runs / "group"), "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "over training seeds" in out and "IQM [95% CI]" in out
    rows = [line for line in out.splitlines() if line.startswith("maml_trpo ") and "|    3 |" in line]
    assert rows, out
    stats = json.loads((tmp_path / "compare_seeds.json").read_text())
    stage = stats["groups"]["maml_trpo"]["stages"][-1]
    assert stage["num_runs"] == 3 and stage["iqm_ci"][0] <= stage["iqm"] <= stage["iqm_ci"][1]
    assert (tmp_path / "compare_seeds.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv, message", [
    (["train", "--seeds", "1", "1"], "--seeds lists a seed twice"),
    (["train", "--seeds", "x=1"], "--seeds needs at least one integer seed"),
])
def test_group_user_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_non_empty_group_dir_is_refused(tmp_path, capsys):
    (tmp_path / "something").write_text("")
    assert main(["train", *TINY, "--seeds", "0", f"run_dir={tmp_path}"]) == 2
    assert "is not empty; continue it with --resume" in capsys.readouterr().err
