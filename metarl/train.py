"""Meta-training: the whole data flow of metarl, the same for every agent.

    TaskSampler(split, seed) ──tasks──▶ Sampler(VectorTaskEnv) ──Trajectories──▶ agent.train_iteration()
            │                                                                          │
            └──held-out tasks──▶ meta_evaluate(agent, ...) ──metrics──▶ Logger (TensorBoard, run dir)

There are no per-agent branches here: what differs lives in the agent's own file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from metarl.adapt_then_evaluate import NAME as ADAPT_THEN_EVALUATE
from metarl.adapt_then_evaluate import ProtocolOptions, adapt_then_evaluate, task_class
from metarl.agent import MetaAgent
from metarl.checkpoint import check_compatible, latest_checkpoint, load_checkpoint, save_checkpoint
from metarl.config import (LEGACY_DEFAULTS, TrainConfig, agent_config, build_dataclass, to_dict,
                           with_resolved_agent_options)
from metarl.device import resolve_device
from metarl.divergence import (Diverged, divergence_message, invalid_distribution_is_divergence,
                               non_finite_stat, non_finite_tensor)
from metarl.evaluate import evaluation_scalars, final_metrics, meta_evaluate
from metarl.logger import Logger
from metarl.plots import per_class_figure, per_task_figure
from metarl.registry import get_agent_spec, import_modules
from metarl.rollout import Sampler, torch_threads
from metarl.run_dir import claim_for_new_run, locked_run_dir
from metarl.tasks import MetaRLError, TaskFamily, TaskSampler, get_family

EVAL_SEED_OFFSET = 1_000_000


@dataclass
class Run:
    """Everything a run is made of, built identically for training, resuming and evaluation."""

    config: TrainConfig
    family: TaskFamily
    task_sampler: TaskSampler
    sampler: Sampler
    agent: MetaAgent
    device: torch.device
    eval_samplers: dict[int, Sampler] = field(default_factory=dict)
    """One evaluation sampler per evaluation seed, its envs built once and reused."""

    def close(self) -> None:
        for sampler in (self.sampler, *self.eval_samplers.values()):
            sampler.close()
        self.eval_samplers.clear()


PROTOCOLS = ("stages", ADAPT_THEN_EVALUATE)


def resolve_protocol(config: TrainConfig, family: TaskFamily) -> TrainConfig:
    """``config`` with ``evaluation.protocol=auto`` replaced by the family's own protocol."""
    protocol = config.evaluation.protocol
    if protocol == "auto":
        protocol = family.evaluation_protocol
    if protocol not in PROTOCOLS:
        raise MetaRLError(f"evaluation.protocol {protocol!r}; accepted: auto, {', '.join(PROTOCOLS)}")
    return replace(config, evaluation=replace(config.evaluation, protocol=protocol))


def build_run(config: TrainConfig) -> Run:
    import_modules(config.imports)  # the user's own family or agent, in this process
    family = get_family(config.env)
    config = resolve_protocol(config, family)
    spec = get_agent_spec(config.agent)
    device = resolve_device(config.device)
    task_sampler = TaskSampler(family, config.seed)
    sampler = Sampler(family, seed=config.seed, env_options=config.env_options,
                      unit_actions=config.unit_actions)
    probe = sampler.describe()
    generator = torch.Generator().manual_seed(config.seed)
    agent = spec.build(
        agent_config(config), family=family, observation_dim=probe.observation_dim,
        action_dim=probe.action_dim, device=device, generator=generator,
    )
    return Run(config, family, task_sampler, sampler, agent, device)


def evaluate_run(run: Run, *, iteration: int, split: str = "test", seed: int | None = None,
                 num_tasks: int | None = None) -> dict[str, Any]:
    """Held-out evaluation of the run's agent with the config's protocol.

    Evaluation has samplers of its own, so it never advances the training streams, and each
    one restarts its counters here, so an evaluation depends only on (seed, iteration).
    """
    ev = run.config.evaluation
    if split == "train_classes":  # the protocol's per-class diagnostics on the training classes
        tasks = [dict(task) for task in run.task_sampler.train_tasks or ()]
    else:
        tasks = run.task_sampler.held_out(split)
    if ev.protocol == "stages":
        tasks = tasks[: num_tasks or ev.num_tasks]
    eval_seed = run.config.seed if seed is None else seed
    generator = torch.Generator().manual_seed(EVAL_SEED_OFFSET + 7919 * eval_seed + iteration)
    if eval_seed not in run.eval_samplers:
        run.eval_samplers[eval_seed] = Sampler(
            run.family, seed=eval_seed + EVAL_SEED_OFFSET, env_options=run.config.env_options,
            unit_actions=run.config.unit_actions,
        )
    sampler = run.eval_samplers[eval_seed]
    sampler.restart()
    if ev.protocol == ADAPT_THEN_EVALUATE:
        options = ProtocolOptions.from_config(ev)
        if split == "train_classes":
            options = replace(options, num_rounds=ev.train_class_rounds)
        if num_tasks is not None:  # a quicker look: fewer rounds of the same tasks
            options = replace(options, num_rounds=max(1, -(-num_tasks // options.tasks_per_round)))
        return adapt_then_evaluate(run.agent, sampler, tasks, options=options, generator=generator)
    return meta_evaluate(run.agent, sampler, tasks, num_stages=ev.num_stages,
                         episodes_per_stage=ev.episodes_per_stage, generator=generator)


def wants_train_classes(run: Run) -> bool:
    """Whether evaluations also measure the protocol on the training classes: under
    adapt_then_evaluate with ``train_class_rounds`` > 0, when the training tasks span several
    classes (ML10, ML45; ML1's one class is its held-out class too)."""
    ev = run.config.evaluation
    train_tasks = run.task_sampler.train_tasks or ()
    return (ev.protocol == ADAPT_THEN_EVALUATE and ev.train_class_rounds > 0
            and len({task_class(task) for task in train_tasks}) > 1)


def log_evaluation_media(run: Run, logger: Logger, result: dict[str, Any], *, iteration: int,
                         video: bool, quiet: bool, train_classes: dict[str, Any] | None = None) -> None:
    """Per-task diagnostics (held-out return against ``family.task_parameter``; under
    adapt_then_evaluate, success per class, with ``train_classes`` beside the held-out ones) at
    every evaluation; with ``video``, an adapted rollout on the first held-out task (MuJoCo families)."""
    step = run.sampler.env_steps
    title = f"{run.config.agent}, iteration {iteration}"
    if "classes" in result:
        logger.log_figure("eval/per_class_success", per_class_figure(
            result, train_classes=train_classes, title=title), step=step)
    else:
        logger.log_figure("eval/per_task_return", per_task_figure(
            result, run.family.task_parameter, title=title), step=step)
    if not video:
        return
    from metarl.video import record_adapted_rollout

    ev = run.config.evaluation
    recording = record_adapted_rollout(
        run.agent, run.family, result["tasks"][0], num_stages=ev.num_stages,
        episodes_per_stage=ev.episodes_per_stage, seed=run.config.seed + EVAL_SEED_OFFSET,
        generator=torch.Generator().manual_seed(EVAL_SEED_OFFSET + iteration),
        env_options=run.config.env_options, unit_actions=run.config.unit_actions,
    )
    if recording.frames is not None:
        gif = logger.log_video("eval/adapted_rollout", recording.frames, step=step)
        path = logger.run_dir / "videos" / f"adapted_rollout_iteration_{iteration:06d}.gif"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(gif)
    elif recording.notice:
        logger.log_text("eval/adapted_rollout", recording.notice, step=step)
        if not quiet:
            print(recording.notice, file=sys.stderr)


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
        run.sampler.load_state_dict(state["sampler"])
        start_iteration = state["iteration"]
        purge_step = run.sampler.env_steps + 1
        _truncate_metrics(run_dir, start_iteration)
    logger = Logger(run_dir, purge_step=purge_step)
    config_dict = to_dict(config)
    if not resuming:
        logger.write_run_files(config_dict)
        run.task_sampler.write(run_dir / "tasks.json")
        logger.log_text("config", "```\n" + json.dumps(config_dict, indent=1) + "\n```")

    spec = get_agent_spec(config.agent)

    def diverged(iteration: int, quantity: str) -> str:
        latest = latest_checkpoint(run_dir)
        return divergence_message(config.agent, iteration, quantity, step_size_keys=spec.step_size_keys,
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
            "sampler": run.sampler.state_dict(),
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
            steps_before = run.sampler.env_steps
            start = time.perf_counter()
            tasks = run.task_sampler.sample_train(run.agent.meta_batch_size)
            done = iteration + 1
            with invalid_distribution_is_divergence(lambda quantity: diverged(done, quantity)):
                stats = run.agent.train_iteration(tasks, run.sampler)
            bad = non_finite_stat(stats)
            if bad:
                raise Diverged(diverged(done, bad))
            seconds = time.perf_counter() - start
            stats["time/iteration_seconds"] = seconds
            stats["time/env_steps_per_second"] = (run.sampler.env_steps - steps_before) / max(seconds, 1e-9)
            stats["train/env_steps"] = float(run.sampler.env_steps)
            if (ev.interval and done % ev.interval == 0) or done == config.num_iterations:
                with invalid_distribution_is_divergence(lambda quantity: diverged(done, quantity)):
                    result = evaluate_run(run, iteration=done)
                stats.update(evaluation_scalars(result))
                train_classes = None
                if wants_train_classes(run):
                    with invalid_distribution_is_divergence(lambda quantity: diverged(done, quantity)):
                        train_classes = evaluate_run(run, iteration=done, split="train_classes")
                    stats.update(evaluation_scalars(train_classes, prefix="eval_train_classes"))
                latest_eval = result["stages"][-1]["return"]["mean"]
                log_evaluation_media(run, logger, result, iteration=done, quiet=quiet,
                                     train_classes=train_classes,
                                     video=done == config.num_iterations)
            logger.log_scalars(stats, step=run.sampler.env_steps, iteration=done)
            if done % config.checkpoint_interval == 0 or done == config.num_iterations:
                checkpoint(done)
            progress.update(1)
            progress.set_postfix(env_steps=run.sampler.env_steps,
                                 steps_per_s=f"{stats['time/env_steps_per_second']:.0f}",
                                 eval=f"{latest_eval:.1f}")
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


def load_run(run_dir: Path, *, device: str | None = None) -> tuple[Run, int]:
    """Rebuild a run from its directory and latest checkpoint (for evaluation)."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MetaRLError(f"run directory {str(run_dir)!r} does not exist; pass a directory made by 'metarl train'")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise MetaRLError(f"{str(run_dir)!r} is not a run directory: it has no config.yaml")
    values = {**LEGACY_DEFAULTS, **yaml.safe_load(config_path.read_text())}
    if device is not None:
        values["device"] = device
    config = build_dataclass(TrainConfig, values)
    path = latest_checkpoint(run_dir)
    if path is None:
        raise MetaRLError(f"no checkpoint in {str(run_dir)!r}; train longer than checkpoint_interval")
    state = load_checkpoint(path)
    run = build_run(config)
    load_agent_state(run, state, path)
    run.sampler.load_state_dict(state["sampler"])
    return run, state["iteration"]


def load_agent_state(run: Run, state: dict[str, Any], path: Path) -> None:
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
