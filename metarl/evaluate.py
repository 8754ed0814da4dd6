"""Meta-test: adaptation measured on held-out tasks, one protocol for every agent.

Each agent starts from its meta-learned state on every held-out task and adapts for
``num_stages`` stages of its own kind (gradient steps for MAML, episodes of a trial for RL²,
trajectories with posterior updates for PEARL), ``episodes_per_stage`` episodes per task and
stage.  Per stage we report the return (and success rate where the env defines success) per
task, aggregated over tasks (and seeds) as mean, interquartile mean and a bootstrap 95% CI.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from metarl.agent import MetaAgent
from metarl.rollout import Sampler
from metarl.stats import summarize
from metarl.tasks import Task


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

    Returns ``{"adaptation_unit", "num_tasks", "stages": [{"stage", "per_task_return": [N],
    "return": summary, "success_rate": summary | None}, ...]}``; summaries hold mean, iqm,
    ci_low, ci_high, std, count.
    """
    N = len(tasks)
    stages = []
    for stage, trajectories in enumerate(
        agent.adapt(tasks, sampler, num_stages=num_stages,
                    episodes_per_stage=episodes_per_stage, generator=generator)
    ):
        per_task_return = trajectories.episode_returns().view(N, -1).mean(1).cpu().numpy()
        success = trajectories.episode_success()
        entry: dict[str, Any] = {
            "stage": stage,
            "per_task_return": per_task_return.tolist(),
            "return": summarize(per_task_return, seed=stage),
            "success_rate": None,
        }
        if success is not None:
            per_task_success = success.view(N, -1).mean(1).cpu().numpy()
            entry["per_task_success"] = per_task_success.tolist()
            entry["success_rate"] = summarize(per_task_success, seed=stage)
        stages.append(entry)
    return {"adaptation_unit": agent.adaptation_unit, "num_tasks": N, "stages": stages}


def evaluation_scalars(result: dict[str, Any], *, prefix: str = "eval") -> dict[str, float]:
    """TensorBoard scalars of a ``meta_evaluate`` result: ``eval/return_stage_k`` and friends."""
    scalars = {}
    for entry in result["stages"]:
        k = entry["stage"]
        scalars[f"{prefix}/return_stage_{k}"] = entry["return"]["mean"]
        scalars[f"{prefix}/return_iqm_stage_{k}"] = entry["return"]["iqm"]
        if entry["success_rate"] is not None:
            scalars[f"{prefix}/success_rate_stage_{k}"] = entry["success_rate"]["mean"]
    first, last = result["stages"][0], result["stages"][-1]
    scalars[f"{prefix}/adaptation_gain"] = last["return"]["mean"] - first["return"]["mean"]
    return scalars


def format_table(result: dict[str, Any], *, title: str = "") -> str:
    """Plain-text table of one evaluation: a row per adaptation stage."""
    unit = result["adaptation_unit"]
    has_success = result["stages"][0]["success_rate"] is not None
    header = f"{unit + 's':>16} | {'mean return':>12} | {'IQM':>9} | {'95% CI':>20}"
    if has_success:
        header += f" | {'success':>8}"
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for entry in result["stages"]:
        r = entry["return"]
        row = (f"{entry['stage']:>16} | {r['mean']:>12.2f} | {r['iqm']:>9.2f} | "
               f"{'[' + format(r['ci_low'], '.2f') + ', ' + format(r['ci_high'], '.2f') + ']':>20}")
        if has_success:
            row += f" | {entry['success_rate']['mean']:>8.2%}"
        lines.append(row)
    lines.append(f"({result['num_tasks']} held-out tasks)")
    return "\n".join(lines)


def combine_seeds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool several evaluations (one per seed) of the same tasks: per stage, the per-task
    returns of all seeds are aggregated together."""
    combined = {"adaptation_unit": results[0]["adaptation_unit"],
                "num_tasks": results[0]["num_tasks"], "num_seeds": len(results), "stages": []}
    for k in range(len(results[0]["stages"])):
        returns = np.concatenate([r["stages"][k]["per_task_return"] for r in results])
        entry: dict[str, Any] = {"stage": k, "per_task_return": returns.tolist(),
                                 "return": summarize(returns, seed=k), "success_rate": None}
        if results[0]["stages"][k]["success_rate"] is not None:
            success = np.concatenate([r["stages"][k]["per_task_success"] for r in results])
            entry["per_task_success"] = success.tolist()
            entry["success_rate"] = summarize(success, seed=k)
        combined["stages"].append(entry)
    return combined
