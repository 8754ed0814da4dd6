"""Meta-World's evaluation protocol: adapt on a task for a fixed number of episodes, then score
a few evaluation episodes by their success flag (Yu et al. 2019, sec. 5; the ``metaworld``
package's ``metaworld.evaluation.metalearning_evaluation``).

Per round, ``tasks_per_round`` test tasks (goals), spread evenly over the split's task classes
(``metalearning_evaluation``'s ``meta_batch_size``: 20); per task the agent adapts for
``adaptation_episodes`` episodes (10), then plays ``evaluation_episodes`` episodes (3).  An
episode succeeds when ``info["success"]`` was set at any of its steps (Meta-World's evaluation
ends an episode at its first success, so its final flag is the same thing).  A task's success
rate is the mean over its evaluation episodes; a class's over its tasks of every round; the
overall rate is the mean of the class rates (every class has the same number of tasks, so it is
also the mean over all tasks).  ``num_rounds`` rounds (10, ``metalearning_evaluation``'s
``num_evals``), each drawing the next goals of every class cyclically from its first
``goals_per_class`` test goals (40: the package's assumption of "40 goals per test task").
A round's tasks are played by one ``adapt`` call, or in waves of at most ``tasks_per_call``
(each task holds sub-envs of its own while it is played: the cap on evaluation's memory).

The protocol drives each agent only through its own ``adapt`` (:class:`metarl.agent.MetaAgent`),
so every agent gets the same episodes:

- agents whose stage is a gradient step (MAML, Reptile) adapt from one batch of
  ``adaptation_episodes`` episodes per task (Meta-World's ``adaptation_steps=1``): ``adapt`` with
  one stage of that many episodes; the first ``evaluation_episodes`` episodes of stage 1, played
  by the adapted policy, are scored (so ``evaluation_episodes <= adaptation_episodes``);
- every other agent (RL²'s trial memory, PEARL's posterior, the no-adaptation baselines) meets a
  task as one sequence of episodes: ``adapt`` with one episode per stage and
  ``adaptation_episodes + evaluation_episodes - 1`` stages; the last ``evaluation_episodes``
  stages are scored, after ``adaptation_episodes`` episodes of that same trial or context.

The adaptation episodes sample actions (they explore); the scored ones act with the policy's
mean action (``scored_actions="mean"``, the default), as the reference agents' ``eval_action``
does in Meta-World+'s implementations (McLean et al. 2025), so that a policy is scored on what
it has learned rather than on where its exploration noise happens to take it (with "success at
any step", noise alone finds many reach-v3 goals).  ``scored_actions="sample"`` scores sampled
actions instead.  Agents get this as ``adapt``'s ``mean_actions_from``
(:func:`adaptation_schedule`); MAML's adapted policy plays all of stage 1 with its mean.

The result has the shape of :func:`metarl.evaluate.meta_evaluate`'s with two stages: stage 0 is
the first adaptation stage (before any adaptation), stage 1 the scored evaluation episodes; it
adds ``protocol``, its options and the per-class summaries.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch

from metarl.agent import MetaAgent
from metarl.evaluate import stage_entry
from metarl.rollout import Sampler
from metarl.stats import summarize
from metarl.tasks import MetaRLError, Task
from metarl.trajectories import Trajectories

NAME = "adapt_then_evaluate"
BATCH_ADAPTATION_UNITS = ("gradient step",)
"""``adaptation_unit``s whose stage is an update from a batch of episodes (one stage of all the
adaptation episodes); every other unit is one more episode of a sequence."""
SCORED_ACTIONS = ("mean", "sample")
"""Values of ``evaluation.scored_actions`` (:attr:`ProtocolOptions.scored_actions`)."""


@dataclass(frozen=True)
class ProtocolOptions:
    """The parameters of Meta-World's protocol (defaults: ``metalearning_evaluation``'s)."""

    adaptation_episodes: int = 10
    evaluation_episodes: int = 3
    num_rounds: int = 10
    tasks_per_round: int = 20
    goals_per_class: int = 40
    tasks_per_call: int = 0
    """The most tasks one ``agent.adapt`` call plays (a round is split into waves of this many
    tasks, in order); 0: the whole round in one call."""
    scored_actions: str = "mean"
    """How the scored episodes act: ``mean`` (the policy's mean action, no exploration noise, as
    the reference agents' ``eval_action`` in Meta-World+'s implementations) or ``sample``
    (drawn as in the adaptation episodes)."""

    @classmethod
    def from_config(cls, evaluation: Any) -> "ProtocolOptions":
        """The options an ``EvaluationConfig`` (fields of the same names) sets."""
        return cls(**{f.name: getattr(evaluation, f.name) for f in fields(cls)})

    def check(self) -> None:
        if self.scored_actions not in SCORED_ACTIONS:
            raise MetaRLError(f"evaluation.scored_actions={self.scored_actions!r} is not known; accepted: "
                              f"{', '.join(SCORED_ACTIONS)}")
        if self.tasks_per_call < 0:
            raise MetaRLError(f"evaluation.tasks_per_call must be 0 (a round in one call) or a positive "
                              f"number of tasks; got {self.tasks_per_call}")
        for name, value in asdict(self).items():
            if isinstance(value, int) and value < 1 and name != "tasks_per_call":
                raise MetaRLError(f"evaluation.{name} must be at least 1 for the {NAME} protocol; got {value}")


def task_class(task: Task) -> str:
    """The class a task belongs to: Meta-World's environment name, else ``"all"``."""
    return str(task.get("env_name", "all"))


def round_tasks(tasks: Sequence[Task], options: ProtocolOptions, round_index: int) -> list[Task]:
    """The tasks of round ``round_index``: per class (in order of first appearance) the next
    ``ceil(tasks_per_round / num_classes)`` of its first ``goals_per_class`` tasks, cyclically."""
    by_class: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_class[task_class(task)].append(task)
    per_class = -(-options.tasks_per_round // len(by_class))
    chosen = []
    for class_tasks in by_class.values():
        goals = class_tasks[: options.goals_per_class]
        chosen += [dict(goals[(round_index * per_class + j) % len(goals)]) for j in range(per_class)]
    return chosen


def adaptation_schedule(agent: MetaAgent, options: ProtocolOptions) -> dict[str, int | None]:
    """The keyword arguments of the ``agent.adapt`` call that plays one task's adaptation and
    evaluation episodes (see the module's docstring): ``num_stages``, ``episodes_per_stage`` and
    ``mean_actions_from`` (the first stage holding scored episodes when they act with the mean,
    else None)."""
    mean = options.scored_actions == "mean"
    if agent.adaptation_unit in BATCH_ADAPTATION_UNITS:
        if options.evaluation_episodes > options.adaptation_episodes:
            # The scored episodes are the first of stage 1, which has as many as stage 0.
            raise MetaRLError(
                f"evaluation.evaluation_episodes={options.evaluation_episodes} exceeds "
                f"evaluation.adaptation_episodes={options.adaptation_episodes}: an agent adapting by "
                f"{agent.adaptation_unit}s is scored on at most as many episodes as it adapts from")
        return {"num_stages": 1, "episodes_per_stage": options.adaptation_episodes,
                "mean_actions_from": 1 if mean else None}
    return {"num_stages": options.adaptation_episodes + options.evaluation_episodes - 1,
            "episodes_per_stage": 1, "mean_actions_from": options.adaptation_episodes if mean else None}


def _scored(agent: MetaAgent, tasks: Sequence[Task], sampler: Sampler, options: ProtocolOptions,
            generator: torch.Generator) -> tuple[Trajectories, list[Trajectories], int]:
    """Run one round through ``agent.adapt``: the first stage's trajectories, the scored ones
    (each ``[T, N * k]`` task-major), and how many leading episodes per task each keeps."""
    batch = agent.adaptation_unit in BATCH_ADAPTATION_UNITS
    schedule = adaptation_schedule(agent, options)
    num_stages, per_stage = schedule["num_stages"], schedule["episodes_per_stage"]
    stages = list(agent.adapt(tasks, sampler, generator=generator, **schedule))
    if len(stages) != num_stages + 1:
        raise MetaRLError(f"{type(agent).__name__}.adapt yielded {len(stages)} stages; the "
                          f"{NAME} protocol asked for {num_stages + 1}")
    for stage, trajectories in enumerate(stages):
        if trajectories.num_episodes != len(tasks) * per_stage:
            raise MetaRLError(f"{type(agent).__name__}.adapt yielded {trajectories.num_episodes} "
                              f"episodes at stage {stage}; asked for {len(tasks)} x {per_stage}")
    if batch:
        return stages[0], [stages[1]], options.evaluation_episodes
    return stages[0], stages[options.adaptation_episodes:], 1


def _per_task(values: list[torch.Tensor], num_tasks: int, keep: int) -> np.ndarray:
    """``[N]`` mean over the first ``keep`` episodes per task of every tensor ``[N * E]``."""
    kept = [v.view(num_tasks, -1)[:, :keep] for v in values]
    return torch.cat(kept, 1).double().mean(1).numpy()


def class_summaries(tasks: Sequence[Task], stages: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per class: success rate and return summaries before (stage 0) and after (last stage)."""
    first, last = stages[0], stages[-1]
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, task in enumerate(tasks):
        by_class[task_class(task)].append(index)
    summaries = {}
    for offset, (name, indices) in enumerate(by_class.items()):
        def pick(entry: dict[str, Any], key: str) -> np.ndarray | None:
            return None if key not in entry else np.asarray(entry[key], dtype=np.float64)[indices]

        success, before = pick(last, "per_task_success"), pick(first, "per_task_success")
        summaries[name] = {
            "num_tasks": len(indices),
            "return": summarize(pick(last, "per_task_return"), seed=offset),
            "success_rate": None if success is None else summarize(success, seed=offset),
            "success_rate_before": None if before is None else summarize(before, seed=offset),
        }
    return summaries


def adapt_then_evaluate(agent: MetaAgent, sampler: Sampler, tasks: Sequence[Task], *,
                        options: ProtocolOptions, generator: torch.Generator) -> dict[str, Any]:
    """Meta-World's protocol on ``tasks`` (a split's tasks, class-major as the benchmark lists
    them).  Returns :func:`metarl.evaluate.meta_evaluate`'s shape (``num_tasks`` = rounds x
    tasks per round; stage 0 before adaptation, stage 1 the scored episodes) plus ``protocol``,
    ``protocol_options`` and ``classes`` (:func:`class_summaries`)."""
    options.check()
    if not tasks:
        raise MetaRLError(f"the {NAME} protocol got no tasks to evaluate")
    steps_before = sampler.env_steps
    evaluated: list[Task] = []
    columns: dict[str, list[np.ndarray]] = defaultdict(list)
    for round_index in range(options.num_rounds):
        chosen = round_tasks(tasks, options, round_index)
        wave = options.tasks_per_call or len(chosen)
        for start in range(0, len(chosen), wave):
            wave_tasks = chosen[start:start + wave]
            N = len(wave_tasks)
            first, scored, keep = _scored(agent, wave_tasks, sampler, options, generator)
            first_keep = first.num_episodes // N
            columns["return_before"].append(_per_task([first.episode_returns()], N, first_keep))
            columns["length_before"].append(_per_task([first.episode_lengths().float()], N, first_keep))
            columns["return"].append(_per_task([t.episode_returns() for t in scored], N, keep))
            columns["length"].append(_per_task([t.episode_lengths().float() for t in scored], N, keep))
            success_before, success = first.episode_success(), [t.episode_success() for t in scored]
            if success_before is not None and all(s is not None for s in success):
                columns["success_before"].append(_per_task([success_before], N, first_keep))
                columns["success"].append(_per_task(success, N, keep))
        evaluated += chosen

    def joined(key: str) -> np.ndarray | None:
        return np.concatenate(columns[key]) if columns.get(key) else None

    stages = [stage_entry(0, joined("return_before"), joined("success_before"), joined("length_before")),
              stage_entry(1, joined("return"), joined("success"), joined("length"))]
    return {
        "protocol": NAME,
        "protocol_options": asdict(options),
        "adaptation_unit": agent.adaptation_unit,
        "num_tasks": len(evaluated),
        "tasks": evaluated,
        "env_steps": sampler.env_steps - steps_before,
        "episodes_before": first_keep,
        "stages": stages,
        "classes": class_summaries(evaluated, stages),
    }


def format_protocol_table(result: dict[str, Any], *, title: str = "") -> str:
    """A row per task class and one overall: success rate after adaptation with its bootstrap
    95% CI over the class's tasks, before adaptation, and mean return."""
    options = result["protocol_options"]
    width = max([len("overall")] + [len(name) for name in result["classes"]])
    header = (f"{'class':<{width}} | {'tasks':>5} | {'success [95% CI]':>24} | {'before':>7} | "
              f"{'mean return [95% CI]':>30}")
    lines = [title] if title else []
    lines += [header, "-" * len(header)]

    def row(name: str, num_tasks: int, success: dict | None, before: dict | None, ret: dict) -> str:
        rate = "-" if success is None else f"{success['mean']:.1%} [{success['ci_low']:.1%}, {success['ci_high']:.1%}]"
        prior = "-" if before is None else f"{before['mean']:.1%}"
        value = f"{ret['mean']:.1f} [{ret['ci_low']:.1f}, {ret['ci_high']:.1f}]"
        return f"{name:<{width}} | {num_tasks:>5} | {rate:>24} | {prior:>7} | {value:>30}"

    for name, summary in result["classes"].items():
        lines.append(row(name, summary["num_tasks"], summary["success_rate"],
                         summary["success_rate_before"], summary["return"]))
    first, last = result["stages"][0], result["stages"][-1]
    lines.append("-" * len(header))
    lines.append(row("overall", result["num_tasks"], last["success_rate"], first["success_rate"], last["return"]))
    scoring = {"mean": " with the policy's mean action", "sample": " with sampled actions"}[
        options.get("scored_actions", "sample")]
    seeds = f" x {result['num_seeds']} seeds" if result.get("num_seeds", 1) > 1 else ""
    lines.append(
        f"(Meta-World protocol: per task {options['adaptation_episodes']} adaptation episodes, then "
        f"{options['evaluation_episodes']} scored{scoring}; {options['num_rounds']} round{'s' if options['num_rounds'] != 1 else ''} x "
        f"{options['tasks_per_round']} tasks{seeds}; success: info['success'] set at any step of "
        f"an episode; before: the first {result.get('episodes_before', 1)} adaptation episode(s) per task, "
        f"before any {result['adaptation_unit']})")
    return "\n".join(lines)
