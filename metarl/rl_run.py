"""The RL side of the training seam (:class:`metarl.runs.MetaRun`): a task family, an agent and
the sampler that steps the family's environments.

    TaskSampler(split, seed) ──tasks──▶ Sampler(VectorTaskEnv) ──Trajectories──▶ agent.train_iteration()
            └──held-out tasks──▶ meta_evaluate(agent, ...) ──return per adaptation stage
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from metarl.adapt_then_evaluate import NAME as ADAPT_THEN_EVALUATE
from metarl.adapt_then_evaluate import ProtocolOptions, adapt_then_evaluate, task_class
from metarl.agent import MetaAgent, TrainingBudget
from metarl.config import EvaluationConfig, TrainConfig, build_dataclass
from metarl.device import resolve_device
from metarl.evaluate import meta_evaluate
from metarl.logger import Logger
from metarl.plots import per_class_figure, per_task_figure
from metarl.registry import get_agent_spec
from metarl.rollout import Sampler
from metarl.runs import EVAL_SEED_OFFSET, RunKind, evaluation_seed
from metarl.tasks import MetaRLError, Task, TaskFamily, TaskSampler, get_family, list_families


@dataclass
class RLRun:
    """A meta-RL run: what :mod:`metarl.train` drives for a task family and an agent."""

    config: TrainConfig
    family: TaskFamily
    task_sampler: TaskSampler
    sampler: Sampler
    agent: MetaAgent
    device: torch.device
    eval_samplers: dict[int, Sampler] = field(default_factory=dict)
    """One evaluation sampler per evaluation seed, its envs built once and reused."""
    steps_name: str = "env_steps"

    @property
    def steps(self) -> int:
        return self.sampler.env_steps

    @property
    def step_size_keys(self) -> tuple[str, ...]:
        return get_agent_spec(self.config.agent).step_size_keys

    @property
    def task_parameter(self) -> str | None:
        return self.family.task_parameter

    def train_iteration(self, tasks: Sequence[Task]) -> dict[str, float]:
        return self.agent.train_iteration(tasks, self.sampler)

    def evaluate(self, *, iteration: int, split: str = "test", seed: int | None = None,
                 num_tasks: int | None = None) -> dict[str, Any]:
        """Held-out evaluation of the agent with the config's protocol (``stages``, or
        ``adapt_then_evaluate``: Meta-World's); ``split="train_classes"`` runs the protocol on
        the training tasks, for per-class diagnostics.

        Evaluation has samplers of its own, so it never advances the training streams, and each
        one restarts its counters here, so an evaluation depends only on (seed, iteration).
        """
        ev = self.config.evaluation
        if split == "train_classes":
            if ev.protocol != ADAPT_THEN_EVALUATE:
                raise MetaRLError(f"split 'train_classes' is for evaluation.protocol {ADAPT_THEN_EVALUATE!r} "
                                  f"(this run's is {ev.protocol!r}); accepted: test, ood")
            tasks = [dict(task) for task in self.task_sampler.train_tasks or ()]
        else:
            tasks = self.task_sampler.held_out(split)
        if ev.protocol == "stages":
            tasks = tasks[: num_tasks or ev.num_tasks]
        eval_seed = self.config.seed if seed is None else seed
        generator = torch.Generator().manual_seed(evaluation_seed(eval_seed, iteration))
        if eval_seed not in self.eval_samplers:
            self.eval_samplers[eval_seed] = Sampler(
                self.family, seed=eval_seed + EVAL_SEED_OFFSET, env_options=self.config.env_options,
                unit_actions=self.config.unit_actions,
            )
        sampler = self.eval_samplers[eval_seed]
        sampler.restart()
        if ev.protocol == ADAPT_THEN_EVALUATE:
            options = ProtocolOptions.from_config(ev)
            if split == "train_classes":
                options = replace(options, num_rounds=ev.train_class_rounds)
            if num_tasks is not None:  # a quicker look: fewer rounds of the same tasks
                options = replace(options, num_rounds=max(1, -(-num_tasks // options.tasks_per_round)))
            return adapt_then_evaluate(self.agent, sampler, tasks, options=options, generator=generator)
        return meta_evaluate(self.agent, sampler, tasks, num_stages=ev.num_stages,
                             episodes_per_stage=ev.episodes_per_stage, generator=generator)

    def diagnostic_evaluations(self, *, iteration: int) -> dict[str, dict[str, Any]]:
        """Under adapt_then_evaluate with ``train_class_rounds`` > 0, when the training tasks
        span several classes (ML10, ML45; ML1's one class is its held-out class too): the
        protocol on the training classes, logged as ``eval_train_classes/``."""
        ev = self.config.evaluation
        train_tasks = self.task_sampler.train_tasks or ()
        if (ev.protocol == ADAPT_THEN_EVALUATE and ev.train_class_rounds > 0
                and len({task_class(task) for task in train_tasks}) > 1):
            return {"eval_train_classes": self.evaluate(iteration=iteration, split="train_classes")}
        return {}

    def log_evaluation_media(self, logger: Logger, result: dict[str, Any], *, iteration: int,
                             final: bool, quiet: bool,
                             diagnostics: dict[str, dict[str, Any]] | None = None) -> None:
        """Per-task diagnostics at every evaluation (held-out return against
        ``family.task_parameter``; under adapt_then_evaluate, success per class, the training
        classes' beside the held-out ones); at the ``final`` one, an adapted rollout on the first
        held-out task (MuJoCo families)."""
        step = self.sampler.env_steps
        title = f"{self.config.agent}, iteration {iteration}"
        if "classes" in result:
            logger.log_figure("eval/per_class_success", per_class_figure(
                result, train_classes=(diagnostics or {}).get("eval_train_classes"), title=title), step=step)
        else:
            logger.log_figure("eval/per_task_return", per_task_figure(
                result, self.family.task_parameter, title=title), step=step)
        if not final:
            return
        from metarl.video import record_adapted_rollout

        ev = self.config.evaluation
        recording = record_adapted_rollout(
            self.agent, self.family, result["tasks"][0], num_stages=ev.num_stages,
            episodes_per_stage=ev.episodes_per_stage, seed=self.config.seed + EVAL_SEED_OFFSET,
            generator=torch.Generator().manual_seed(EVAL_SEED_OFFSET + iteration),
            env_options=self.config.env_options, unit_actions=self.config.unit_actions,
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

    def stream_state(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_stream_state(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

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
    unused = _UNUSED_UNDER[protocol]
    defaults = EvaluationConfig()
    changed = [key for key in unused if getattr(config.evaluation, key) != getattr(defaults, key)]
    if changed:
        other = "adapt_then_evaluate" if protocol == "stages" else "stages"
        raise MetaRLError(
            f"evaluation.{', evaluation.'.join(changed)} only apply to evaluation.protocol={other}, "
            f"and the protocol here is {protocol!r}"
            + (" (the family's own)" if config.evaluation.protocol == "auto" else "")
            + ("; its tasks are evaluation.num_rounds x evaluation.tasks_per_round"
               if protocol == ADAPT_THEN_EVALUATE else "")
        )
    return replace(config, evaluation=replace(config.evaluation, protocol=protocol))


_UNUSED_UNDER = {
    "stages": ("adaptation_episodes", "evaluation_episodes", "num_rounds", "tasks_per_round",
               "goals_per_class", "train_class_rounds", "scored_actions", "tasks_per_call"),
    ADAPT_THEN_EVALUATE: ("num_tasks",),
}
"""``evaluation`` keys each protocol does not read (a config that sets one gets an error, not
silence).  ``num_stages`` / ``episodes_per_stage`` still shape the final video's rollout under
``adapt_then_evaluate``."""


def build_rl_run(config: TrainConfig) -> RLRun:
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
        build_dataclass(spec.config_class, config.agent_options, prefix="agent_options."),
        family=family, observation_dim=probe.observation_dim, action_dim=probe.action_dim,
        device=device, generator=generator,
    )
    return RLRun(config, family, task_sampler, sampler, agent, device)


def _owns(env: str) -> bool:
    try:
        get_family(env)
    except MetaRLError:
        return False
    return True


def check_rl_config(config: TrainConfig) -> TrainConfig:
    """The family's ``env_options`` and the agent's ``agent_options``, checked by name and type."""
    from metarl.envs.parallel import check_env_options

    check_env_options(get_family(config.env), config.env_options)  # before a run directory is made
    spec = get_agent_spec(config.agent)
    options = build_dataclass(spec.config_class, config.agent_options, prefix="agent_options.")
    # Keep the checked values (``'3e-4'`` became 0.0003), so config.yaml records numbers.
    return replace(config, agent_options={key: getattr(options, key) for key in config.agent_options})


def rl_budget(config: TrainConfig) -> TrainingBudget | None:
    spec = get_agent_spec(config.agent)
    if spec.budget is None:
        return None
    options = build_dataclass(spec.config_class, config.agent_options, prefix="agent_options.")
    return spec.budget(options, get_family(config.env), config.num_iterations)


RL = RunKind(
    name="RL",
    task_distributions=lambda: [family.name for family in list_families()],
    owns=_owns,
    check=check_rl_config,
    build=build_rl_run,
    agent_config_class=lambda name: get_agent_spec(name).config_class,
    budget=rl_budget,
)
