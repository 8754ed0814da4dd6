"""Meta-training: the whole data flow of metarl, the same for every agent and learner.

    TaskSampler(split, seed) ──tasks──▶ run.train_iteration(tasks) ──stats──▶ Logger (TensorBoard, run dir)
            │                                                            │
            └──held-out tasks──▶ run.evaluate(...) ──metrics per stage───┘   checkpoints: agent + streams

``run`` is a :class:`metarl.runs.MetaRun`: the RL side (a task family, an agent, a sampler of
environments; :mod:`metarl.rl_run`) or the supervised side (a few-shot task source and a
learner; :mod:`metarl.supervised.run`), chosen by the config's ``env``.  There are no per-agent
or per-side branches here: what differs lives behind that protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from metarl.checkpoint import check_compatible, latest_checkpoint, load_checkpoint, save_checkpoint
from metarl.config import (TrainConfig, agent_config, build_dataclass, to_dict, with_legacy_defaults,
                           with_resolved_agent_options)
from metarl.divergence import (Diverged, divergence_message, invalid_distribution_is_divergence,
                               non_finite_stat, non_finite_tensor)
from metarl.evaluate import evaluation_scalars, final_metrics, metric_of
from metarl.logger import Logger
from metarl.rollout import torch_threads
from metarl.run_dir import claim_for_new_run, locked_run_dir
from metarl.runs import MetaRun, build_run
from metarl.tasks import MetaRLError


def evaluate_run(run: MetaRun, *, iteration: int, split: str = "test", seed: int | None = None,
                 num_tasks: int | None = None) -> dict[str, Any]:
    """Held-out evaluation of the run with its config's protocol (:meth:`MetaRun.evaluate`): it
    never advances the training streams and depends only on (seed, iteration)."""
    return run.evaluate(iteration=iteration, split=split, seed=seed, num_tasks=num_tasks)


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.env}-{config.agent}-seed{config.seed}-{stamp}"


def _truncate_metrics(run_dir: Path, iteration: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be redone)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line, torn by a kill mid-write
            continue
        if record.get("iteration", -1) <= iteration:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))


def update_threads(config: TrainConfig) -> int:
    """Torch threads for the updates: ``config.torch_threads``, or every usable core when 0."""
    if config.torch_threads > 0:
        return config.torch_threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def train(config: TrainConfig, *, resume_from: Path | None = None, quiet: bool = False,
          overwrite: bool = False) -> Path:
    """Meta-train ``config``; returns the run directory.  ``resume_from``: a run directory whose
    latest checkpoint is loaded (its config must match ``config`` except ``num_iterations``).
    A new run needs a directory of its own (``overwrite``: delete the run already there); the
    directory stays locked against other writers while this runs.  The caller's torch thread
    count is restored at the end."""
    run_dir = Path(resume_from or config.run_dir or default_run_dir(config))
    config = with_resolved_agent_options(config)  # config.yaml records every agent option
    with locked_run_dir(run_dir), torch_threads(update_threads(config)):
        if resume_from is None:
            claim_for_new_run(run_dir, overwrite=overwrite)
        return _train_locked(config, run_dir, resuming=resume_from is not None, quiet=quiet)


def _train_locked(config: TrainConfig, run_dir: Path, *, resuming: bool, quiet: bool) -> Path:
    run = build_run(config)
    config = run.config  # evaluation.protocol resolved: the run's files record the family's
    start_iteration = 0
    purge_step = None
    if resuming:
        path = latest_checkpoint(run_dir)
        if path is None:
            raise MetaRLError(f"no checkpoint in {str(run_dir)!r}; it has no checkpoints/iteration_*.pt")
        state = load_checkpoint(path)
        check_compatible(state["config"], to_dict(config))
        load_agent_state(run, state, path)
        run.task_sampler.load_state_dict(state["task_sampler"])
        run.load_stream_state(state["sampler"])
        start_iteration = state["iteration"]
        purge_step = run.steps + 1
        _truncate_metrics(run_dir, start_iteration)
    logger = Logger(run_dir, purge_step=purge_step)
    config_dict = to_dict(config)
    if not resuming:
        logger.write_run_files(config_dict)
        run.task_sampler.write(run_dir / "tasks.json")
        logger.log_text("config", "```\n" + json.dumps(config_dict, indent=1) + "\n```")

    def diverged(iteration: int, quantity: str) -> str:
        latest = latest_checkpoint(run_dir)
        return divergence_message(config.agent, iteration, quantity, step_size_keys=run.step_size_keys,
                                  latest_checkpoint=str(latest) if latest else None)

    def checkpoint(iteration: int) -> None:
        agent_state = run.agent.state_dict()
        bad = non_finite_tensor(agent_state)
        if bad:  # never write a checkpoint that cannot be resumed from
            raise Diverged(diverged(iteration, f"agent state {bad!r}"))
        save_checkpoint(run_dir, iteration, {
            "config": config_dict,
            "agent": agent_state,
            "task_sampler": run.task_sampler.state_dict(),
            "sampler": run.stream_state(),  # the data stream: env-step counters, example generator
        })

    show_progress = config.progress and not quiet and sys.stderr.isatty()
    progress = tqdm(total=config.num_iterations, initial=start_iteration, disable=not show_progress,
                    unit="it", dynamic_ncols=True)
    if not quiet:
        print(f"run directory: {run_dir}\nTensorBoard: tensorboard --logdir {run_dir}", file=sys.stderr)
    ev = config.evaluation
    latest_eval = float("nan")
    result = None
    try:
        for iteration in range(start_iteration, config.num_iterations):
            steps_before = run.steps
            start = time.perf_counter()
            tasks = run.task_sampler.sample_train(run.agent.meta_batch_size)
            done = iteration + 1
            with invalid_distribution_is_divergence(lambda quantity: diverged(done, quantity)):
                stats = run.train_iteration(tasks)
            bad = non_finite_stat(stats)
            if bad:
                raise Diverged(diverged(done, bad))
            seconds = time.perf_counter() - start
            stats["time/iteration_seconds"] = seconds
            stats[f"time/{run.steps_name}_per_second"] = (run.steps - steps_before) / max(seconds, 1e-9)
            stats[f"train/{run.steps_name}"] = float(run.steps)
            if (ev.interval and done % ev.interval == 0) or done == config.num_iterations:
                with invalid_distribution_is_divergence(lambda quantity: diverged(done, quantity)):
                    result = evaluate_run(run, iteration=done)
                stats.update(evaluation_scalars(result))
                diagnostics = {}
                with invalid_distribution_is_divergence(lambda quantity: diverged(done, quantity)):
                    diagnostics = run.diagnostic_evaluations(iteration=done)
                for prefix, extra in diagnostics.items():  # e.g. Meta-World's training classes
                    stats.update(evaluation_scalars(extra, prefix=prefix))
                latest_eval = result["stages"][-1][metric_of(result)]["mean"]
                run.log_evaluation_media(logger, result, iteration=done, quiet=quiet,
                                         final=done == config.num_iterations, diagnostics=diagnostics)
            logger.log_scalars(stats, step=run.steps, iteration=done)
            if done % config.checkpoint_interval == 0 or done == config.num_iterations:
                checkpoint(done)
            progress.update(1)
            progress.set_postfix({run.steps_name: run.steps,
                                  "steps_per_s": f"{stats[f'time/{run.steps_name}_per_second']:.0f}",
                                  "eval": f"{latest_eval:.3g}"})
        if result is not None:
            # The agent's full resolved config replaces its overrides (agent_options).
            hparams = {**{k: v for k, v in config_dict.items() if k != "agent_options"},
                       "agent_config": to_dict(agent_config(config))}
            logger.log_hparams(hparams, final_metrics(result))
    finally:
        failing = sys.exc_info()[1] is not None
        progress.close()
        run.close()
        try:
            logger.close()
        except MetaRLError:
            if not failing:  # else the error already on its way says what went wrong first
                raise
    return run_dir


def load_run(run_dir: Path, *, device: str | None = None) -> tuple[MetaRun, int]:
    """Rebuild a run from its directory and latest checkpoint (for evaluation)."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MetaRLError(f"run directory {str(run_dir)!r} does not exist; pass a directory made by 'metarl train'")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise MetaRLError(f"{str(run_dir)!r} is not a run directory: it has no config.yaml")
    values = with_legacy_defaults(yaml.safe_load(config_path.read_text()))
    if device is not None:
        values["device"] = device
    config = build_dataclass(TrainConfig, values)
    path = latest_checkpoint(run_dir)
    if path is None:
        raise MetaRLError(f"no checkpoint in {str(run_dir)!r}; train longer than checkpoint_interval")
    state = load_checkpoint(path)
    run = build_run(config)
    load_agent_state(run, state, path)
    run.load_stream_state(state["sampler"])
    return run, state["iteration"]


def load_agent_state(run: MetaRun, state: dict[str, Any], path: Path) -> None:
    """Load the checkpoint's agent into ``run``, or say why it does not fit: a run directory
    written by an older metarl records only the agent options it was given, and the agent's
    defaults (MAML-TRPO's network, issue 15) may have changed since."""
    try:
        run.agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError) as error:
        # torch's first line only names the module; the next ones name the tensor that differs.
        lines = [line.strip().rstrip(".") for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith(("size mismatch", "Missing", "Unexpected"))),
                      lines[0] if lines else type(error).__name__)
        raise MetaRLError(
            f"checkpoint {str(path)!r} does not fit the agent its config builds "
            f"({reason}); if an older metarl wrote the run, its config.yaml lacks "
            "agent options whose defaults have changed since: write them into its agent_options "
            "(e.g. hidden_sizes, activation)"
        ) from None
