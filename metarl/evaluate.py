"""Meta-test: adaptation measured on held-out tasks, one protocol for every agent.

Each agent starts from its meta-learned state on every held-out task and adapts for
``num_stages`` stages of its own kind (gradient steps for MAML, episodes of a trial for RL²,
trajectories with posterior updates for PEARL, nothing for the no-adaptation baselines): the
agent's ``adapt`` defines the budget, ``episodes_per_stage`` episodes per task and stage.  Per
stage we report the return (and the success rate where the env defines ``info["success"]``) per
task, aggregated over tasks (and seeds) as mean, interquartile mean and a bootstrap 95% CI
(:mod:`metarl.stats`).  The held-out tasks are the run's fixed test split or its
out-of-distribution split (``TaskSampler.held_out("ood")``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from metarl.agent import MetaAgent, plural_unit
from metarl.rollout import Sampler
from metarl.stats import summarize
from metarl.tasks import MetaRLError, Task


LOWER_IS_BETTER = frozenset({"mse"})
"""Metrics where a smaller value is better (the supervised regression error)."""


def metric_of(result: dict[str, Any]) -> str:
    """What an evaluation's stages measure: ``return`` (RL; results written before this key
    existed too), ``accuracy`` or ``mse`` (supervised few-shot learners)."""
    return result.get("metric", "return")


def stage_entry(stage: int, per_task_values: np.ndarray, per_task_success: np.ndarray | None = None,
                per_task_length: np.ndarray | None = None, *, metric: str = "return") -> dict[str, Any]:
    """One stage's record: per-task values ``[N]`` of ``metric`` and their summaries (seeded by
    the stage); RL adds episode lengths and, where defined, success."""
    entry: dict[str, Any] = {
        "stage": stage,
        f"per_task_{metric}": per_task_values.tolist(),
        metric: summarize(per_task_values, seed=stage),
    }
    if per_task_length is not None:
        entry["per_task_episode_length"] = per_task_length.tolist()
    entry["success_rate"] = None
    if per_task_success is not None:
        entry["per_task_success"] = per_task_success.tolist()
        entry["success_rate"] = summarize(per_task_success, seed=stage)
    return entry


def meta_evaluate(
    agent: MetaAgent,
    sampler: Sampler,
    tasks: Sequence[Task],
    *,
    num_stages: int,
    episodes_per_stage: int,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Adapt ``agent`` to each of ``tasks`` and measure every stage.

    Stage ``k`` is what ``agent.adapt`` yields ``k``-th: ``episodes_per_stage`` episodes per task
    (columns task-major, ``[N * episodes_per_stage]``).  A task's value at a stage is the mean
    over its episodes.  Returns::

        {"adaptation_unit", "num_tasks", "tasks": [N task dicts], "env_steps",
         "stages": [{"stage", "per_task_return": [N], "return": summary,
                     "per_task_episode_length": [N],
                     "success_rate": summary | None, "per_task_success": [N] (if defined)}, ...]}

    where a summary holds ``mean, iqm, ci_low, ci_high, std, count`` over the ``N`` tasks.
    """
    if num_stages < 0 or episodes_per_stage < 1:
        raise MetaRLError(
            f"evaluation needs num_stages >= 0 and episodes_per_stage >= 1; got {num_stages} and "
            f"{episodes_per_stage}"
        )
    if not tasks:
        raise MetaRLError("evaluation got no held-out tasks; pass num_tasks >= 1")
    N = len(tasks)
    steps_before = sampler.env_steps
    stages = []
    for stage, trajectories in enumerate(
        agent.adapt(tasks, sampler, num_stages=num_stages,
                    episodes_per_stage=episodes_per_stage, generator=generator)
    ):
        if trajectories.num_episodes != N * episodes_per_stage:
            raise MetaRLError(
                f"{type(agent).__name__}.adapt yielded {trajectories.num_episodes} episodes at "
                f"stage {stage}; the protocol asks for {N} tasks x {episodes_per_stage} episodes"
            )
        per_task_return = trajectories.episode_returns().view(N, -1).mean(1).cpu().double().numpy()
        per_task_length = trajectories.episode_lengths().view(N, -1).mean(1).cpu().double().numpy()
        success = trajectories.episode_success()
        per_task_success = None if success is None else success.view(N, -1).mean(1).cpu().double().numpy()
        stages.append(stage_entry(stage, per_task_return, per_task_success, per_task_length))
    if len(stages) != num_stages + 1:
        raise MetaRLError(
            f"{type(agent).__name__}.adapt yielded {len(stages)} stages; the protocol asks for "
            f"stage 0 (before adaptation) to stage {num_stages}"
        )
    return {
        "adaptation_unit": agent.adaptation_unit,
        "num_tasks": N,
        "tasks": [dict(task) for task in tasks],
        "env_steps": sampler.env_steps - steps_before,
        "stages": stages,
    }


def evaluation_scalars(result: dict[str, Any], *, prefix: str = "eval") -> dict[str, float]:
    """TensorBoard scalars of an evaluation: ``eval/<metric>_stage_k`` and friends (``return``
    for RL, ``accuracy`` or ``mse`` for supervised learners)."""
    metric = metric_of(result)
    scalars = {}
    for entry in result["stages"]:
        k = entry["stage"]
        scalars[f"{prefix}/{metric}_stage_{k}"] = entry[metric]["mean"]
        scalars[f"{prefix}/{metric}_iqm_stage_{k}"] = entry[metric]["iqm"]
        if entry["success_rate"] is not None:
            scalars[f"{prefix}/success_rate_stage_{k}"] = entry["success_rate"]["mean"]
    for name, summary in result.get("classes", {}).items():  # adapt_then_evaluate's classes
        scalars[f"{prefix}/return/{name}"] = summary["return"]["mean"]
        if summary["success_rate"] is not None:
            scalars[f"{prefix}/success_rate/{name}"] = summary["success_rate"]["mean"]
    first, last = result["stages"][0], result["stages"][-1]
    scalars[f"{prefix}/adaptation_gain"] = last[metric]["mean"] - first[metric]["mean"]
    return scalars


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics shown beside the hyperparameters in TensorBoard's HParams tab.

    Tagged ``hparams/...`` (not ``eval/...``) because TensorBoard also writes them as scalars, and
    they must not add a stray point to the ``eval/`` curves.
    """
    metric = metric_of(result)
    first, last = result["stages"][0], result["stages"][-1]
    metrics = {
        f"hparams/{metric}_before_adaptation": first[metric]["mean"],
        f"hparams/{metric}_after_adaptation": last[metric]["mean"],
        f"hparams/{metric}_iqm_after_adaptation": last[metric]["iqm"],
        "hparams/adaptation_gain": last[metric]["mean"] - first[metric]["mean"],
    }
    if last["success_rate"] is not None:
        metrics["hparams/success_rate_after_adaptation"] = last["success_rate"]["mean"]
    return metrics


DIGITS = {"return": 2}
"""Decimals shown per metric (accuracies and errors are small numbers: 3)."""


def _ci(summary: dict[str, float], digits: int = 2) -> str:
    return f"[{summary['ci_low']:.{digits}f}, {summary['ci_high']:.{digits}f}]"


def paired_difference(result: dict[str, Any], stage: int) -> dict[str, float]:
    """Summary of ``metric at stage - metric at stage 0`` task by task (the same tasks and
    evaluation seeds): a paired CI, which separates stages that the per-stage CIs, overlapping
    because tasks differ much more from each other than a stage changes them, cannot."""
    key = f"per_task_{metric_of(result)}"
    after = np.asarray(result["stages"][stage][key], dtype=np.float64)
    before = np.asarray(result["stages"][0][key], dtype=np.float64)
    return summarize(after - before, seed=stage)


METRIC_NOTES = {
    "accuracy": "accuracy: the fraction of query examples classified correctly",
    "mse": "mse: mean squared error on the query points, lower is better",
}


def stages_note(result: dict[str, Any]) -> str:
    """What a stage is, for a table's footer: ``k`` gradient steps, episodes, trajectories, or
    (metric-based learners) the single stage of classifying the query set from the support set."""
    unit = result["adaptation_unit"]
    shots = f" ({result['num_shots']}-shot)" if "num_shots" in result else ""
    if unit == "support set":
        return f"one stage: the query set classified from the support set{shots} in one pass, no gradient steps"
    return f"stage k: after k {plural_unit(unit)}" + (f" on the support set{shots}" if shots else "")


def format_table(result: dict[str, Any], *, title: str = "") -> str:
    """Plain-text table of one evaluation: a row per adaptation stage, with each later stage's
    paired difference to stage 0 over the same tasks."""
    metric = metric_of(result)
    digits = DIGITS.get(metric, 3)
    has_success = result["stages"][0]["success_rate"] is not None
    header = (f"{'stage':>5} | {'mean ' + metric:>12} | {'IQM':>9} | {'95% CI of mean':>20} | "
              f"{'vs stage 0 [paired 95% CI]':>29}")
    if has_success:
        header += f" | {'success':>8}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for entry in result["stages"]:
        r = entry[metric]
        difference = ""
        if entry["stage"] > 0:
            d = paired_difference(result, entry["stage"])
            difference = f"{d['mean']:+.{digits}f} {_ci(d, digits)}"
        row = (f"{entry['stage']:>5} | {r['mean']:>12.{digits}f} | {r['iqm']:>9.{digits}f} | "
               f"{_ci(r, digits):>20} | {difference:>29}")
        if has_success:
            row += f" | {entry['success_rate']['mean']:>8.2%}"
        lines.append(row)
    seeds = f" x {result['num_seeds']} seeds" if result.get("num_seeds", 1) > 1 else ""
    lines.append(f"({stages_note(result)}; {result['num_tasks']} held-out tasks{seeds}"
                 + (f"; {METRIC_NOTES[metric]}" if metric in METRIC_NOTES else "")
                 + ("; success: the episode's info['success'] was set at any step" if has_success else "")
                 + ")")
    return "\n".join(lines)


def common_metric(results: Sequence[dict[str, Any]]) -> str:
    """The one metric of results shown together; runs measured differently cannot share a table."""
    metrics = sorted({metric_of(result) for result in results})
    if len(metrics) != 1:
        raise MetaRLError(f"cannot compare runs measured by different metrics ({', '.join(metrics)}); "
                          "compare RL runs and supervised runs of one kind separately")
    return metrics[0]


def compare_table(results: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Side-by-side table: a row per run (label), mean of the metric [95% CI] per stage, IQM of
    the last; the footer says what a stage is for each kind of run in the table.

    Runs with fewer stages (a metric-based learner has one) leave their later columns blank.
    """
    if not results:
        raise MetaRLError("nothing to compare; pass at least one run directory")
    metric = common_metric([result for _, result in results])
    digits = DIGITS.get(metric, 3)
    num_stages = max(len(result["stages"]) for _, result in results)
    width = max(len(label) for label, _ in results)
    cell = 27
    header = f"{'run':<{width}} | " + " | ".join(f"{'stage ' + str(k):>{cell}}" for k in range(num_stages))
    header += f" | {'IQM last':>9} | {'success last':>12} | unit"
    lines = [header, "-" * len(header)]
    for label, result in results:
        cells = []
        for k in range(num_stages):
            if k < len(result["stages"]):
                r = result["stages"][k][metric]
                cells.append(f"{r['mean']:.{digits}f} {_ci(r, digits)}".rjust(cell))
            else:
                cells.append(" " * cell)
        last = result["stages"][-1]
        success = "-" if last["success_rate"] is None else f"{last['success_rate']['mean']:.2%}"
        lines.append(f"{label:<{width}} | " + " | ".join(cells)
                     + f" | {last[metric]['iqm']:>9.{digits}f} | {success:>12} | {result['adaptation_unit']}")
    notes = list(dict.fromkeys(stages_note(result) for _, result in results))
    lines.append(f"({metric}, mean [95% CI] over held-out tasks; " + "; ".join(notes)
                 + (f"; {METRIC_NOTES[metric]}" if metric in METRIC_NOTES else "") + ")")
    return "\n".join(lines)


def combine_seeds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool several evaluations (one per seed) of the same tasks: per stage, the per-task
    values of all seeds are aggregated together (``N * num_seeds`` values per summary)."""
    if not results:
        raise MetaRLError("combine_seeds needs at least one evaluation")
    num_stages = {len(r["stages"]) for r in results}
    if len(num_stages) != 1:
        raise MetaRLError(f"cannot pool evaluations with different numbers of stages: {sorted(num_stages)}")
    metric = common_metric(results)
    combined = {"adaptation_unit": results[0]["adaptation_unit"],
                "num_tasks": results[0]["num_tasks"], "num_seeds": len(results),
                "tasks": [task for r in results for task in r.get("tasks", [])],
                "env_steps": sum(r.get("env_steps", 0) for r in results), "stages": []}
    if "metric" in results[0]:
        combined["metric"] = metric
    if "num_shots" in results[0]:
        combined["num_shots"] = results[0]["num_shots"]
    for k in range(len(results[0]["stages"])):
        def pooled(key: str) -> np.ndarray:
            return np.concatenate([np.asarray(r["stages"][k][key], dtype=np.float64) for r in results])

        success = pooled("per_task_success") if results[0]["stages"][k]["success_rate"] is not None else None
        lengths = (pooled("per_task_episode_length")
                   if all("per_task_episode_length" in r["stages"][k] for r in results)
                   else None if metric != "return" else np.zeros(0))
        combined["stages"].append(stage_entry(k, pooled(f"per_task_{metric}"), success, lengths, metric=metric))
    if "protocol" in results[0]:  # adapt_then_evaluate: its options, and classes over the pool
        from metarl.adapt_then_evaluate import class_summaries

        combined["protocol"], combined["protocol_options"] = results[0]["protocol"], results[0]["protocol_options"]
        combined["classes"] = class_summaries(combined["tasks"], combined["stages"])
    return combined


def per_task_scores(result: dict[str, Any], stage: int) -> np.ndarray:
    """``[num_tasks]`` value of each held-out task at ``stage`` (its return, accuracy or error),
    averaged over the evaluation seeds an evaluation pooled (:func:`combine_seeds` lists them
    seed-major)."""
    values = np.asarray(result["stages"][stage][f"per_task_{metric_of(result)}"], dtype=np.float64)
    return values.reshape(result.get("num_seeds", 1), result["num_tasks"]).mean(0)


def seed_score_matrices(results: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Per stage, ``[num_runs, num_tasks]``: a row per run (training seed) of one agent."""
    shapes = {(len(r["stages"]), r["num_tasks"]) for r in results}
    if len(shapes) != 1:
        raise MetaRLError(
            "runs of one agent must be evaluated alike to pool their seeds; got (stages, tasks) "
            f"{sorted(shapes)} from {', '.join(str(r.get('run_dir')) for r in results)}")
    num_stages = len(results[0]["stages"])
    return [np.stack([per_task_scores(r, k) for r in results]) for k in range(num_stages)]


def seeds_table(groups: Sequence[tuple[str, list[dict[str, Any]]]]) -> str:
    """Rows per group (an agent's runs) and stage: IQM and mean over seeds x tasks with
    stratified bootstrap 95% CIs (``group["stats"]`` from :func:`metarl.stats.over_seeds`)."""
    width = max(len(label) for label, _ in groups)
    header = (f"{'agent':<{width}} | {'stage':>5} | {'runs':>4} | {'tasks':>5} | "
              f"{'IQM [95% CI]':>27} | {'mean [95% CI]':>27}")
    lines = [header, "-" * len(header)]
    for label, stages in groups:
        for k, s in enumerate(stages):
            iqm = f"{s['iqm']:.2f} [{s['iqm_ci'][0]:.2f}, {s['iqm_ci'][1]:.2f}]"
            mean = f"{s['mean']:.2f} [{s['mean_ci'][0]:.2f}, {s['mean_ci'][1]:.2f}]"
            lines.append(f"{label if k == 0 else '':<{width}} | {k:>5} | {s['num_runs']:>4} | "
                         f"{s['num_tasks']:>5} | {iqm:>27} | {mean:>27}")
    return "\n".join(lines)
