"""Figures of evaluations: adaptation curves (return vs stage with a CI band) and per-task
diagnostics (held-out return against the family's task parameter).

Figures are built with :class:`matplotlib.figure.Figure` and drawn by the Agg canvas directly,
never through ``pyplot``'s global state, so they work headless and in any thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metarl.agent import plural_unit
from metarl.evaluate import metric_of
from metarl.tasks import Task


def _new_figure(width: float = 6.4, height: float = 4.2) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def adaptation_curve_figure(results: Sequence[tuple[str, dict[str, Any]]], *, title: str = "") -> Figure:
    """Mean held-out return per adaptation stage, one line per ``(label, result)`` with its
    bootstrap 95% CI as a shaded band; the x-axis is the stage (0 = before adaptation)."""
    figure = _new_figure()
    axes = figure.add_subplot()
    units = sorted({result["adaptation_unit"] for _, result in results})
    metric = metric_of(results[0][1])
    for label, result in results:
        stages = np.array([entry["stage"] for entry in result["stages"]])
        mean = np.array([entry[metric]["mean"] for entry in result["stages"]])
        low = np.array([entry[metric]["ci_low"] for entry in result["stages"]])
        high = np.array([entry[metric]["ci_high"] for entry in result["stages"]])
        (line,) = axes.plot(stages, mean, marker="o", label=label)
        axes.fill_between(stages, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    num_stages = max(len(result["stages"]) for _, result in results)
    axes.set_xticks(range(num_stages))
    axes.set_xlabel("adaptation stage (" + "; ".join(plural_unit(u) for u in units) + ")")
    axes.set_ylabel(f"mean held-out {metric} (95% CI)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title, fontsize="medium")
    return figure


def task_parameter_values(tasks: Sequence[Task], name: str | None) -> np.ndarray | None:
    """``[N]`` scalars or ``[N, 2]`` points of task parameter ``name``; None when it is missing
    or not numeric (then diagnostics fall back to the task index)."""
    if name is None or not tasks or any(name not in task for task in tasks):
        return None
    try:
        values = np.asarray([task[name] for task in tasks], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
        return values.reshape(-1)
    if values.ndim == 2 and values.shape[1] == 2:
        return values
    return None


def _mean_per_distinct_task(tasks: Sequence[Task], *returns: np.ndarray) -> tuple[list[Task], ...]:
    """Average ``returns [N]`` over repeated tasks (an evaluation pooled over seeds lists each
    task once per seed), keeping the first-seen order of the distinct tasks."""
    keys = [json.dumps(task, sort_keys=True) for task in tasks]
    distinct = list(dict.fromkeys(keys))
    index = np.array([distinct.index(key) for key in keys])
    counts = np.bincount(index, minlength=len(distinct))
    first_task = {key: task for key, task in zip(reversed(keys), reversed(list(tasks)))}
    means = [np.bincount(index, weights=r[: len(tasks)], minlength=len(distinct)) / counts for r in returns]
    return ([first_task[key] for key in distinct], *means)


def per_task_figure(result: dict[str, Any], task_parameter: str | None, *, title: str = "") -> Figure:
    """Held-out return of every task against its parameter, before and after adaptation.

    A scalar parameter (target velocity, direction) is the x-axis; a 2-D one (goal position) is
    drawn as two maps of the plane coloured by return; anything else falls back to the task index.
    A task evaluated under several seeds is one point: the mean of its returns.
    """
    metric = metric_of(result)
    first, last = result["stages"][0], result["stages"][-1]
    tasks, before, after = _mean_per_distinct_task(
        result["tasks"], np.asarray(first[f"per_task_{metric}"]), np.asarray(last[f"per_task_{metric}"]))
    values = task_parameter_values(tasks, task_parameter)
    if values is not None and values.ndim == 2:
        figure = _new_figure(9.0, 4.0)
        axes = figure.subplots(1, 2, sharex=True, sharey=True)
        low, high = min(before.min(), after.min()), max(before.max(), after.max())
        for ax, returns, name in ((axes[0], before, f"stage {first['stage']}"),
                                  (axes[1], after, f"stage {last['stage']}")):
            points = ax.scatter(values[:, 0], values[:, 1], c=returns, vmin=low, vmax=high, cmap="viridis")
            ax.set_title(f"{name}: {metric} by {task_parameter}", fontsize="medium")
            ax.set_xlabel(f"{task_parameter}[0]")
            ax.set_aspect("equal", adjustable="box")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"{task_parameter}[1]")
        figure.colorbar(points, ax=list(axes), label=f"held-out {metric}")
    else:
        figure = _new_figure()
        ax = figure.add_subplot()
        x = values if values is not None else np.arange(len(tasks), dtype=np.float64)
        order = np.argsort(x, kind="stable")
        ax.plot(x[order], before[order], marker="o", linestyle="--", label=f"stage {first['stage']} (before)")
        ax.plot(x[order], after[order], marker="o", label=f"stage {last['stage']} (adapted)")
        ax.set_xlabel(task_parameter if values is not None else "task index")
        ax.set_ylabel(f"held-out {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure


def per_class_figure(result: dict[str, Any], *, train_classes: dict[str, Any] | None = None,
                     title: str = "") -> Figure:
    """Success rate per task class (Meta-World's protocol, :mod:`metarl.adapt_then_evaluate`):
    a bar per class after adaptation with its bootstrap 95% CI, a marker before adaptation; the
    held-out classes, and beside them (``train_classes``: the same protocol on the training
    classes) the training classes."""
    panels = [("held-out classes", result)]
    if train_classes is not None:
        panels.insert(0, ("training classes", train_classes))
    height = max(2.5, 0.32 * max(len(r["classes"]) for _, r in panels) + 1.4)
    figure = _new_figure(5.2 * len(panels), height)
    axes = np.atleast_1d(figure.subplots(1, len(panels), squeeze=False)[0])
    for ax, (name, panel) in zip(axes, panels):
        names = list(panel["classes"])
        summaries = [panel["classes"][n] for n in names]
        after = np.array([np.nan if s["success_rate"] is None else s["success_rate"]["mean"] for s in summaries])
        low = np.array([np.nan if s["success_rate"] is None else s["success_rate"]["ci_low"] for s in summaries])
        high = np.array([np.nan if s["success_rate"] is None else s["success_rate"]["ci_high"] for s in summaries])
        before = np.array([np.nan if s["success_rate_before"] is None else s["success_rate_before"]["mean"]
                           for s in summaries])
        y = np.arange(len(names))
        ax.barh(y, after, xerr=np.vstack([after - low, high - after]), color="tab:blue", alpha=0.8,
                label="after adaptation [95% CI]")
        ax.plot(before, y, "k|", markersize=12, label="before adaptation")
        ax.set_yticks(y, names, fontsize="small")
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        overall = panel["stages"][-1]["success_rate"]
        rate = "" if overall is None else f": {overall['mean']:.0%} overall"
        ax.set_title(f"{name}{rate}", fontsize="medium")
        ax.set_xlabel("success rate")
        ax.grid(alpha=0.3, axis="x")
    axes[-1].legend(fontsize="small", loc="lower right")
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def seeds_figure(groups: Sequence[tuple[str, dict[str, Any]]], *, title: str = "") -> Figure:
    """Statistics over training seeds, a row per env: the IQM adaptation curve of each agent
    with its stratified bootstrap 95% CI band (left), and the performance profile of the last
    stage (right: fraction of seed x task returns above each threshold, with its CI band).

    ``groups``: ``(label, {"env", "unit", "stages": [over_seeds summaries],
    "profile": {"thresholds", "fraction", "low", "high"}})``.
    """
    envs = list(dict.fromkeys(group["env"] for _, group in groups))
    figure = _new_figure(11.0, 4.0 * len(envs))
    axes = np.atleast_2d(figure.subplots(len(envs), 2, squeeze=False))
    for row, env in enumerate(envs):
        curve_axes, profile_axes = axes[row]
        members = [(label, group) for label, group in groups if group["env"] == env]
        for label, group in members:
            stages = np.arange(len(group["stages"]))
            iqm = np.array([s["iqm"] for s in group["stages"]])
            low = np.array([s["iqm_ci"][0] for s in group["stages"]])
            high = np.array([s["iqm_ci"][1] for s in group["stages"]])
            runs = group["stages"][0]["num_runs"]
            (line,) = curve_axes.plot(stages, iqm, marker="o", label=f"{label} ({runs} seeds)")
            curve_axes.fill_between(stages, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            profile = group["profile"]
            profile_axes.plot(profile["thresholds"], profile["fraction"], color=line.get_color(), label=label)
            profile_axes.fill_between(profile["thresholds"], profile["low"], profile["high"],
                                      color=line.get_color(), alpha=0.2, linewidth=0)
        units = sorted({group["unit"] for _, group in members})
        curve_axes.set_xticks(range(max(len(group["stages"]) for _, group in members)))
        curve_axes.set_xlabel("adaptation stage (" + "; ".join(plural_unit(u) for u in units) + ")")
        metric = members[0][1].get("metric", "return")
        curve_axes.set_ylabel(f"IQM held-out {metric} (95% CI)")
        curve_axes.set_title(f"{env}: adaptation over seeds x tasks", fontsize="medium")
        profile_axes.set_xlabel(f"held-out {metric} threshold τ (last stage)")
        profile_axes.set_ylabel(f"fraction of runs x tasks with {metric} > τ")
        profile_axes.set_ylim(-0.02, 1.02)
        profile_axes.set_title(f"{env}: performance profile", fontsize="medium")
        for ax in (curve_axes, profile_axes):
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure
