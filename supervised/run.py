"""The supervised side of the training seam (:class:`metarl.runs.MetaRun`): a few-shot task
source and a learner, trained and evaluated by the same loop, config, checkpoints and logs as
the RL agents.

    TaskSampler(split, seed) ──tasks──▶ source.make_batch (support + query sets) ──▶ learner.train_iteration()
            └──held-out tasks──▶ evaluate_learner ──accuracy / MSE per adaptation stage

A config names a source as its ``env`` and a learner as its ``agent``; ``env_options`` are the
source's options (``path``, ``num_ways``, ``rotations``, ...) plus the episode shape of
:class:`FewShotOptions` (``num_shots``, ``num_query``); ``agent_options`` are the learner's.
The logs' x-axis counts the labelled examples drawn for training (``train/examples``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import numpy as np
import torch

from metarl.agent import TrainingBudget
from metarl.config import TrainConfig, build_dataclass
from metarl.device import resolve_device
from metarl.logger import Logger
from metarl.plots import per_task_figure
from metarl.runs import RunKind, evaluation_seed
from metarl.supervised.evaluate import evaluate_learner
from metarl.supervised.learner import Learner, get_learner_spec
from metarl.supervised.task_source import (FewShotTaskSource, get_source_spec, make_source, source_names,
                                           source_options)
from metarl.tasks import MetaRLError, Task, TaskSampler

DATA_STREAM = 0x5EED
"""Mixed with the run's seed for the generator of the training examples (which drawings, which
x), independent of the task sampler's streams."""


@dataclass(frozen=True)
class FewShotOptions:
    """The episode shape, in ``env_options`` beside the source's own options."""

    num_shots: int = 5
    """K: support examples per task (regression) or per class (classification), in training and
    evaluation."""
    num_query: int = 10
    """Query examples per task (per class for classification) the learner is scored on."""


def split_env_options(options: dict[str, Any]) -> tuple[FewShotOptions, dict[str, Any]]:
    """``env_options`` -> (episode shape, the source's own options)."""
    own = {f.name for f in fields(FewShotOptions)}
    shape = build_dataclass(FewShotOptions, {k: v for k, v in options.items() if k in own}, prefix="env_options.")
    if shape.num_shots < 1 or shape.num_query < 1:
        raise MetaRLError(f"env_options.num_shots and num_query: {shape.num_shots}, {shape.num_query}; "
                          "accepted: >= 1 each")
    return shape, {k: v for k, v in options.items() if k not in own}


class SupervisedRun:
    """A few-shot run: what :mod:`metarl.train` drives for a task source and a learner."""

    steps_name = "examples"

    def __init__(self, config: TrainConfig, source: FewShotTaskSource, agent: Learner, shape: FewShotOptions):
        self.config = config
        self.source = source
        self.agent = agent
        self.shape = shape
        self.task_sampler = TaskSampler(source, config.seed)
        self.data_rng = np.random.default_rng([DATA_STREAM, config.seed])
        self.examples = 0
        self.task_parameter = source.task_parameter

    @property
    def steps(self) -> int:
        return self.examples

    @property
    def step_size_keys(self) -> tuple[str, ...]:
        """The learner's step sizes (Adam's, MAML's inner α and outer β, Reptile's ε)."""
        names = {f.name for f in fields(get_learner_spec(self.config.agent).config_class)}
        return tuple(key for key in ("lr", "inner_lr", "outer_lr") if key in names)

    def train_iteration(self, tasks: Sequence[Task]) -> dict[str, float]:
        batch = self.source.make_batch(tasks, self.data_rng, self.shape.num_shots, self.shape.num_query)
        self.examples += batch.num_tasks * (batch.support_inputs.shape[1] + batch.query_inputs.shape[1])
        return self.agent.train_iteration(batch)

    def evaluate(self, *, iteration: int, split: str = "test", seed: int | None = None,
                 num_tasks: int | None = None) -> dict[str, Any]:
        """Held-out tasks' query sets scored after each stage of adaptation on their support sets
        (``evaluation.num_stages`` gradient steps, or the one stage of a metric-based learner);
        the examples come from a generator of (seed, iteration) alone."""
        ev = self.config.evaluation
        tasks = self.task_sampler.held_out(split)[: num_tasks or ev.num_tasks]
        eval_seed = self.config.seed if seed is None else seed
        return evaluate_learner(self.agent, self.source, tasks, num_shots=self.shape.num_shots,
                                num_query=self.shape.num_query, num_stages=ev.num_stages,
                                seed=evaluation_seed(eval_seed, iteration))

    def diagnostic_evaluations(self, *, iteration: int) -> dict[str, dict[str, Any]]:
        """None on this side: the held-out evaluation is the whole picture."""
        del iteration
        return {}

    def log_evaluation_media(self, logger: Logger, result: dict[str, Any], *, iteration: int,
                             final: bool, quiet: bool,
                             diagnostics: dict[str, dict[str, Any]] | None = None) -> None:
        """The per-task figure where the source has a scalar task parameter (the sinusoid's
        amplitude); classification tasks have none worth plotting."""
        del final, quiet, diagnostics  # no videos or diagnostics on this side
        if self.task_parameter is not None:
            logger.log_figure(f"eval/per_task_{result['metric']}", per_task_figure(
                result, self.task_parameter, title=f"{self.config.agent}, iteration {iteration}"), step=self.examples)

    def stream_state(self) -> dict[str, Any]:
        return {"examples": self.examples, "rng": self.data_rng.bit_generator.state}

    def load_stream_state(self, state: dict[str, Any]) -> None:
        self.examples = state["examples"]
        self.data_rng.bit_generator.state = state["rng"]

    def close(self) -> None:
        """Nothing to release: no environments or workers."""


def build_supervised_run(config: TrainConfig) -> SupervisedRun:
    shape, options = split_env_options(config.env_options)
    source = make_source(config.env, options)
    spec = get_learner_spec(config.agent)
    learner = spec.build(build_dataclass(spec.config_class, config.agent_options, prefix="agent_options."),
                         source=source, device=resolve_device(config.device),
                         generator=torch.Generator().manual_seed(config.seed))
    return SupervisedRun(config, source, learner, shape)


def check_supervised_config(config: TrainConfig) -> TrainConfig:
    """Options checked by name (the source's factory signature, the learner's dataclass) without
    building the source, so no data set is read or generated before the run starts."""
    _, options = split_env_options(config.env_options)
    accepted = source_options(config.env)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        names = ", ".join(f"env_options.{name}" for name in [*accepted, *(f.name for f in fields(FewShotOptions))])
        raise MetaRLError(f"unknown config key 'env_options.{unknown[0]}' for source {config.env!r}; accepted: {names}")
    spec = get_learner_spec(config.agent)
    if spec.classification_only and not get_source_spec(config.env).classification:
        raise MetaRLError(f"learner {config.agent!r} classifies; source {config.env!r} is regression "
                          "(accepted: a classification source such as Glyphs or Omniglot)")
    if config.evaluation.protocol not in ("auto", "stages"):
        raise MetaRLError(f"evaluation.protocol {config.evaluation.protocol!r} is for RL families; a "
                          "supervised source is evaluated by stages (accepted: auto, stages)")
    checked = build_dataclass(spec.config_class, config.agent_options, prefix="agent_options.")
    return replace(config, agent_options={key: getattr(checked, key) for key in config.agent_options})


def supervised_budget(config: TrainConfig) -> TrainingBudget:
    """Labelled examples drawn for training (reported in the ``env steps`` column's place) and
    the outer updates: one per iteration."""
    shape, options = split_env_options(config.env_options)
    num_ways = options.get("num_ways", source_options(config.env).get("num_ways", 1))
    per_task = (shape.num_shots + shape.num_query) * (num_ways if get_source_spec(config.env).classification else 1)
    cls = get_learner_spec(config.agent).config_class
    meta_batch_size = build_dataclass(cls, config.agent_options, prefix="agent_options.").meta_batch_size
    return TrainingBudget(env_steps=config.num_iterations * meta_batch_size * per_task,
                          gradient_steps=config.num_iterations)


SUPERVISED = RunKind(
    name="supervised",
    task_distributions=source_names,
    owns=lambda env: env in source_names(),
    check=check_supervised_config,
    build=build_supervised_run,
    agent_config_class=lambda name: get_learner_spec(name).config_class,
    budget=supervised_budget,
)
