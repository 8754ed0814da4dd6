"""Figures: `metarl evaluate` and `metarl compare` draw PNGs; per-task diagnostics per parameter kind."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import TINY
from metarl.cli import main
from metarl.plots import adaptation_curve_figure, per_task_figure, save_figure, task_parameter_values

TINY_BASELINE = [t for t in TINY if "hidden_sizes" not in t]


def is_png_with_content(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return float(image[..., :3].std()) > 0.01  # not a blank canvas


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    for name, extra in [("maml", []), ("maml_seed1", ["seed=1"]), ("random", ["agent=random"])]:
        options = TINY if name.startswith("maml") else TINY_BASELINE
        assert main(["train", *options, *extra, f"run_dir={root / name}"]) == 0
        dirs[name] = root / name
    return dirs


def test_evaluate_writes_json_and_adaptation_png(runs, capsys):
    run_dir = runs["maml"]
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "mean return" in out and "eval_adaptation.png" in out
    assert is_png_with_content(run_dir / "eval_adaptation.png")
    assert is_png_with_content(run_dir / "eval_per_task.png")
    assert json.loads((run_dir / "eval.json").read_text())["split"] == "test"


def test_evaluate_ood_split_writes_its_own_files(runs, capsys):
    run_dir = runs["random"]
    assert main(["evaluate", str(run_dir), "--split", "ood", "--num-tasks", "3"]) == 0
    result = json.loads((run_dir / "eval_ood.json").read_text())
    assert result["split"] == "ood" and result["num_tasks"] == 3
    goals = np.array([task["goal"] for task in result["tasks"]])
    assert (np.abs(goals).max(axis=1) > 0.5).all()  # outside the training square
    assert is_png_with_content(run_dir / "eval_ood_adaptation.png")


def test_compare_draws_several_runs_into_one_png(runs, tmp_path, capsys):
    output = tmp_path / "figures" / "compare.png"
    argv = ["compare", str(runs["maml"]), str(runs["maml_seed1"]), str(runs["random"]), "--output", str(output)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "maml_trpo seed 0" in out and "maml_trpo seed 1" in out and "random seed 0" in out
    assert is_png_with_content(output)
    table = json.loads(output.with_suffix(".json").read_text())
    assert set(table) == {"maml_trpo seed 0", "maml_trpo seed 1", "random seed 0"}


def test_compare_pools_seeds_per_agent(runs, tmp_path, capsys):
    output = tmp_path / "pooled.png"
    argv = ["compare", str(runs["maml"]), str(runs["maml_seed1"]), str(runs["random"]),
            "--pool-seeds", "--num-tasks", "2", "--output", str(output)]
    assert main(argv) == 0
    table = json.loads(output.with_suffix(".json").read_text())
    assert set(table) == {"maml_trpo (2 runs)", "random (1 runs)"}
    assert len(table["maml_trpo (2 runs)"]["stages"][0]["per_task_return"]) == 4  # 2 tasks x 2 runs


def test_compare_of_a_missing_run_is_a_user_error(capsys):
    assert main(["compare", "/nonexistent/run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def fake_result(tasks, before, after):
    def stage(k, values):
        values = np.asarray(values, dtype=float)
        return {"stage": k, "per_task_return": values.tolist(), "success_rate": None,
                "return": {"mean": values.mean(), "ci_low": values.min(), "ci_high": values.max(),
                           "iqm": values.mean()}}
    return {"adaptation_unit": "gradient step", "num_tasks": len(tasks), "tasks": tasks,
            "stages": [stage(0, before), stage(1, after)]}


@pytest.mark.parametrize("tasks, parameter, kind", [
    ([{"velocity": v} for v in (0.5, 1.5, 1.0)], "velocity", 1),
    ([{"goal": [x, -x]} for x in (0.1, 0.2, 0.3)], "goal", 2),
    ([{"mass": [1.0, 2.0, 3.0]} for _ in range(3)], "mass", None),
    ([{"velocity": 1.0}] * 3, None, None),
])
def test_per_task_figure_for_every_kind_of_parameter(tmp_path, tasks, parameter, kind):
    values = task_parameter_values(tasks, parameter)
    assert (values is None) if kind is None else (values.ndim == kind)
    figure = per_task_figure(fake_result(tasks, [-3, -2, -1], [-1, -1, 0]), parameter, title="t")
    assert is_png_with_content(save_figure(figure, tmp_path / "per_task.png"))


def test_adaptation_curve_has_one_line_and_band_per_run():
    figure = adaptation_curve_figure([("a", fake_result([{}], [1], [2])), ("b", fake_result([{}], [0], [0]))])
    axes = figure.axes[0]
    assert len(axes.lines) == 2 and len(axes.collections) == 2
    assert axes.get_legend() is not None


def test_compare_reuses_a_matching_saved_evaluation_only(runs, tmp_path, capsys):
    run_dir = runs["random"]
    assert main(["evaluate", str(run_dir), "--num-tasks", "2"]) == 0
    saved = json.loads((run_dir / "eval.json").read_text())
    saved["stages"][0]["return"]["mean"] = 12345.0  # a marker: only a reused file shows it
    (run_dir / "eval.json").write_text(json.dumps(saved))
    assert main(["compare", str(run_dir), "--num-tasks", "2", "--output", str(tmp_path / "a.png")]) == 0
    assert "12345.00" in capsys.readouterr().out
    assert main(["compare", str(run_dir), "--num-tasks", "3", "--output", str(tmp_path / "b.png")]) == 0
    assert "12345.00" not in capsys.readouterr().out
    assert main(["compare", str(run_dir), "--seeds", "1", "--num-tasks", "2", "--output", str(tmp_path / "c.png")]) == 0
    assert "12345.00" not in capsys.readouterr().out


def test_per_task_figure_averages_a_task_repeated_over_seeds():
    from metarl.plots import _mean_per_distinct_task
    tasks = [{"velocity": 1.0}, {"velocity": 2.0}, {"velocity": 1.0}, {"velocity": 2.0}]
    distinct, before, after = _mean_per_distinct_task(tasks, np.array([1.0, 2.0, 3.0, 6.0]),
                                                      np.array([0.0, 0.0, 2.0, 2.0]))
    assert distinct == [{"velocity": 1.0}, {"velocity": 2.0}]
    assert before.tolist() == [2.0, 4.0] and after.tolist() == [1.0, 1.0]
