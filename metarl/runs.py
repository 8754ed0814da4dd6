"""The seam between the training loop and what it trains: the RL side or the supervised side.

:mod:`metarl.train` drives a :class:`MetaRun` and knows nothing else: it draws training tasks
from the run's shared :class:`metarl.tasks.TaskSampler`, calls ``train_iteration``, evaluates,
logs against ``steps`` and checkpoints ``agent`` and the data streams.  Two kinds of run meet
that protocol, each in its own side's package:

* the RL side (:mod:`metarl.rl_run`): a task family, an agent, a sampler of environments;
* the supervised side (:mod:`metarl.supervised.run`): a few-shot task source and a learner.

Which kind a config makes is decided by its ``env``: the name of an RL task family or of a
supervised task source (the registries are disjoint).  Its ``agent`` is then looked up among that
side's agents or learners, and ``agent_options`` / ``env_options`` are validated by that side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from metarl.tasks import MetaRLError, Task, TaskSampler

if TYPE_CHECKING:
    from metarl.agent import TrainingBudget
    from metarl.config import TrainConfig
    from metarl.logger import Logger

EVAL_SEED_OFFSET = 1_000_000


def evaluation_seed(seed: int, iteration: int) -> int:
    """The seed of an evaluation's own random streams: depends only on (seed, iteration), so
    ``metarl evaluate`` repeats the evaluation training logged at that iteration."""
    return EVAL_SEED_OFFSET + 7919 * seed + iteration


class Trainable(Protocol):
    """What every agent and learner has that the loop touches directly."""

    meta_batch_size: int
    """Training tasks drawn per iteration."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MetaRun(Protocol):
    """One run, built from a :class:`TrainConfig` identically for training, resuming and
    evaluation."""

    config: "TrainConfig"
    task_sampler: TaskSampler
    """The shared seeded sampler: training draws and the fixed held-out split (``tasks.json``)."""
    agent: Trainable
    """What meta-learns: an RL agent or a supervised learner (checkpointed as ``agent``)."""
    steps_name: str
    """What ``steps`` counts: ``env_steps`` (RL) or ``examples`` (supervised: labelled examples
    drawn for training).  The logs' x-axis."""
    step_size_keys: tuple[str, ...]
    """The option keys a divergence message tells the user to lower."""
    task_parameter: str | None
    """The scalar task parameter per-task diagnostics plot against (or None)."""

    @property
    def steps(self) -> int: ...

    def train_iteration(self, tasks: Sequence[Task]) -> dict[str, float]:
        """Meta-train on ``tasks`` (drawn by the loop from ``task_sampler``); the stats to log."""

    def evaluate(self, *, iteration: int, split: str = "test", seed: int | None = None,
                 num_tasks: int | None = None) -> dict[str, Any]:
        """Held-out evaluation with the config's protocol, never advancing the training streams;
        the result's stages are keyed by its ``metric`` (:mod:`metarl.evaluate`)."""

    def diagnostic_evaluations(self, *, iteration: int) -> dict[str, dict[str, Any]]:
        """Further evaluations logged beside each periodic one, by TensorBoard prefix (e.g.
        ``eval_train_classes``: Meta-World's protocol on the training classes); often none."""

    def log_evaluation_media(self, logger: "Logger", result: dict[str, Any], *, iteration: int,
                             final: bool, quiet: bool,
                             diagnostics: dict[str, dict[str, Any]] | None = None) -> None:
        """Figures (and, at the ``final`` evaluation, videos) of an evaluation and its
        ``diagnostics`` (from :meth:`diagnostic_evaluations`)."""

    def stream_state(self) -> dict[str, Any]:
        """The training data stream's state (checkpointed as ``sampler``): counters, generators."""

    def load_stream_state(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunKind:
    """One side of metarl: how a config naming one of its task distributions is checked and built."""

    name: str
    """``RL`` or ``supervised``: how ``metarl list`` and error messages name the side."""
    task_distributions: Callable[[], list[str]]
    """Names of its task distributions (families or sources) registered so far."""
    owns: Callable[[str], bool]
    """Whether ``env`` names one of its task distributions (installed ones included)."""
    check: Callable[["TrainConfig"], "TrainConfig"]
    """Validate ``env_options``, ``agent`` and ``agent_options`` without building anything (before a
    run directory is made); returns the config with the checked option values."""
    build: Callable[["TrainConfig"], MetaRun]
    agent_config_class: Callable[[str], type]
    """The config dataclass of ``agent`` on this side (unknown names raise, listing the side's)."""
    budget: Callable[["TrainConfig"], "TrainingBudget | None"]
    """What a whole run costs (``metarl list --configs``), or None when unknown."""


def run_kinds() -> list[RunKind]:
    """The two sides, supervised first: its few sources are known without importing MuJoCo."""
    from metarl.rl_run import RL
    from metarl.supervised.run import SUPERVISED

    return [SUPERVISED, RL]


def kind_of(env: str) -> RunKind:
    """The side whose task distribution ``env`` is; an unknown name lists both sides' names."""
    kinds = run_kinds()
    for kind in kinds:
        if kind.owns(env):
            return kind
    from metarl.tasks import ENTRY_POINT_GROUP

    names = "; ".join(f"{kind.name}: {', '.join(sorted(kind.task_distributions()))}" for kind in kinds)
    raise MetaRLError(
        f"unknown env {env!r}, neither an RL task family nor a supervised task source; accepted: "
        f"{names}; for a family or source of your own, import its "
        f"module (metarl train --import MODULE, or imports: [MODULE] in the config) or install it "
        f"under the {ENTRY_POINT_GROUP!r} entry-point group"
    )


def build_run(config: "TrainConfig") -> MetaRun:
    """The run ``config`` describes, on the side its ``env`` belongs to."""
    from metarl.registry import import_modules

    import_modules(config.imports)  # the user's own family, source, agent or learner
    return kind_of(config.env).build(config)


def agent_config(config: "TrainConfig") -> Any:
    """``config.agent_options`` over the defaults of the agent's (or learner's) own dataclass."""
    from metarl.config import build_dataclass

    cls = kind_of(config.env).agent_config_class(config.agent)
    return build_dataclass(cls, config.agent_options, prefix="agent_options.")
