"""Task families and the seeded task sampler.

A *task* is a plain value: a ``dict`` mapping parameter names to JSON-serialisable numbers or
lists (``{"goal": [0.1, -0.3]}``, ``{"velocity": 1.2}``).  Tasks are drawn from a family's
distribution with a seeded :class:`numpy.random.Generator` that the sampler owns; no global RNG
is ever touched (oyster reseeds ``np.random`` inside ``sample_tasks`` and varibad documents
duplicated tasks across workers because of it).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

Task = dict[str, Any]


class MetaRLError(Exception):
    """A user error: the message names what was wrong and what is accepted."""


@dataclass(frozen=True)
class TaskEncoder:
    """A callable ``Task -> [dim] float32`` numeric encoding, with its size known up front (what
    the oracle baseline appends to observations, :mod:`metarl.envs.oracle`)."""

    dim: int
    encode: Callable[[Task], np.ndarray]

    def __call__(self, task: Task) -> np.ndarray:
        encoding = np.asarray(self.encode(task), dtype=np.float32).reshape(-1)
        if encoding.shape != (self.dim,):
            raise ValueError(f"task encoding has shape {encoding.shape}; expected ({self.dim},)")
        return encoding


def gym_id(family_name: str) -> str:
    """The Gymnasium id of a family, e.g. ``metarl/HalfCheetahVel-PEARL-v0``."""
    return f"metarl/{family_name}-v0"


@dataclass(frozen=True)
class TaskFamily:
    """A parameterised family of environments and the distribution its tasks come from.

    ``num_train_tasks=None`` means the paper resamples training tasks every iteration (MAML);
    otherwise a fixed set of ``num_train_tasks`` is drawn once, disjoint from the test set.
    ``fixed_tasks`` lists an enumerable family (HalfCheetahDir's two directions); when
    ``test_equals_train`` the paper evaluates on the training tasks themselves.
    """

    name: str
    description: str
    citation: str
    sample_tasks: Callable[[np.random.Generator, int], list[Task]]
    make_vector_env: Callable[..., Any]
    max_episode_steps: int
    num_test_tasks: int
    num_train_tasks: int | None = None
    fixed_tasks: tuple[Task, ...] | None = None
    test_equals_train: bool = False
    task_parameter: str | None = None
    """Name of the scalar task parameter used for per-task diagnostics plots (e.g. ``velocity``)."""
    sample_ood_tasks: Callable[[np.random.Generator, int], list[Task]] | None = None
    """Out-of-distribution tasks (e.g. velocities beyond the training range), if defined."""
    make_env: Callable[..., Any] | None = None
    """Single Gymnasium env constructor (``make_env(task=None, **kw)``), for checkers and rendering."""
    engines: tuple[str, ...] = ()
    """In-process engines ``make_vector_env`` accepts as ``engine=`` (the first is its default);
    empty: it takes no ``engine`` and is the family's one in-process (``serial``) engine.
    Worker processes and Ray actors work for every family (:mod:`metarl.envs.parallel`)."""
    auto_engine: str = "processes"
    """What ``env_options.engine=auto`` runs: the fastest measured for the family
    (``processes`` for a list of Python envs; ``serial`` for a NumPy batch; ``auto`` to let the
    family's own engines choose)."""
    encode_task: TaskEncoder | None = None
    """The task as numbers (``metarl.envs.oracle``'s ``scalar_encoder``, ``vector_encoder``, ...):
    what the ``oracle_trpo`` baseline sees beside the observation; None: no oracle."""
    gym_id: str | None = None
    """``gymnasium.make(gym_id, task=...)``; set by :func:`register_family` for a family with
    ``make_env`` (``metarl/<name>-v0``)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form facts about the family (Meta-World: its benchmark and env name)."""
    sample_test_tasks: Callable[[np.random.Generator, int], list[Task]] | None = None
    """Test tasks drawn from a distribution of their own (e.g. held-out classes), if not from
    ``sample_tasks``."""
    evaluation_protocol: str = "stages"
    """How ``evaluation.protocol=auto`` measures the family: ``stages`` (return per adaptation
    stage) or ``adapt_then_evaluate`` (Meta-World's success protocol, :mod:`metarl.adapt_then_evaluate`)."""

    def __post_init__(self) -> None:
        if "encode_task" in self.metadata:  # how a family declared its encoder before issue 14
            if self.encode_task is not None:
                raise MetaRLError(f"family {self.name!r} gives its task encoder twice: as encode_task= "
                                  "and in metadata['encode_task']; keep encode_task=")
            warnings.warn(f"family {self.name!r}: metadata['encode_task'] is now the field "
                          "TaskFamily(encode_task=...); taken from metadata this time",
                          DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "encode_task", self.metadata["encode_task"])
            object.__setattr__(self, "metadata", {k: v for k, v in self.metadata.items() if k != "encode_task"})


class TaskDistribution(Protocol):
    """What :class:`TaskSampler` reads of a family (read-only): met by the RL :class:`TaskFamily`
    and by the supervised task sources (``metarl.supervised.task_source.FewShotTaskSource``)."""

    @property
    def name(self) -> str: ...
    @property
    def sample_tasks(self) -> Callable[[np.random.Generator, int], list[Task]]: ...
    @property
    def num_test_tasks(self) -> int: ...
    @property
    def num_train_tasks(self) -> int | None: ...
    @property
    def fixed_tasks(self) -> tuple[Task, ...] | None: ...
    @property
    def test_equals_train(self) -> bool: ...
    @property
    def sample_ood_tasks(self) -> Callable[[np.random.Generator, int], list[Task]] | None: ...
    @property
    def sample_test_tasks(self) -> Callable[[np.random.Generator, int], list[Task]] | None: ...


_FAMILIES: dict[str, TaskFamily] = {}


def register_family(family: TaskFamily) -> TaskFamily:
    """Make ``family`` known by its name to ``metarl`` (configs, ``metarl list``) and, when it has
    a ``make_env``, to Gymnasium as :func:`gym_id` (``gymnasium.make("metarl/<name>-v0",
    task=...)``, the family's horizon as time limit).  Returns the registered family, its
    ``gym_id`` set; registering a name again replaces it in both registries.

    The one call a family module makes: ``FAMILY = register_family(TaskFamily(...))``.
    """
    if family.make_env is not None:
        import gymnasium

        env_id = gym_id(family.name)
        if env_id in gymnasium.registry:
            del gymnasium.registry[env_id]
        # The family's single env takes ``task=None`` (then a default task) as keyword argument.
        gymnasium.register(id=env_id, entry_point=family.make_env, max_episode_steps=family.max_episode_steps)
        family = replace(family, gym_id=env_id)
    _FAMILIES[family.name] = family
    return family


ENTRY_POINT_GROUP = "metarl.families"
"""Installed packages register their families by naming a module in this entry-point group."""


def _load_installed_families() -> None:
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()  # importing the module registers its families


def get_family(name: str) -> TaskFamily:
    import metarl.envs  # noqa: F401  (registers the shipped families)

    if name not in _FAMILIES:
        _load_installed_families()
    if name not in _FAMILIES:
        from metarl.envs.metaworld import require_family

        require_family(name)  # a Meta-World name without the extra: say how to install it
        raise MetaRLError(
            f"unknown env family {name!r}; accepted: {', '.join(sorted(_FAMILIES))}; for a family "
            f"of your own, import its module (metarl train --import MODULE, or imports: [MODULE] "
            f"in the config) or install it under the {ENTRY_POINT_GROUP!r} entry-point group"
        )
    return _FAMILIES[name]


def list_families() -> list[TaskFamily]:
    import metarl.envs  # noqa: F401

    return [_FAMILIES[name] for name in sorted(_FAMILIES)]


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


class TaskSampler:
    """Draws training tasks and holds the fixed, reproducible held-out split of a family.

    Three independent streams are derived from ``seed`` (via ``SeedSequence.spawn``): the fixed
    train/test split, the per-iteration training draws, and the out-of-distribution split, so
    that e.g. changing the meta-batch size never changes the test tasks.
    """

    def __init__(self, family: TaskDistribution, seed: int) -> None:
        self.family = family
        self.seed = int(seed)
        split_seq, train_seq, ood_seq = np.random.SeedSequence(self.seed).spawn(3)
        self._split_rng = np.random.default_rng(split_seq)
        self.rng = np.random.default_rng(train_seq)
        self._ood_seq = ood_seq
        if family.fixed_tasks is not None:
            tasks = [dict(t) for t in family.fixed_tasks]
            if family.test_equals_train:
                self.train_tasks: list[Task] | None = tasks
                self.test_tasks = list(tasks)
            else:
                order = self._split_rng.permutation(len(tasks))
                num_test = family.num_test_tasks
                self.test_tasks = [tasks[i] for i in order[:num_test]]
                self.train_tasks = [tasks[i] for i in order[num_test:]]
        elif family.num_train_tasks is None:
            self.train_tasks = None
            sample_test = family.sample_test_tasks or family.sample_tasks
            self.test_tasks = sample_test(self._split_rng, family.num_test_tasks)
        elif family.sample_test_tasks is not None:  # disjoint by construction
            self.train_tasks = family.sample_tasks(self._split_rng, family.num_train_tasks)
            self.test_tasks = family.sample_test_tasks(self._split_rng, family.num_test_tasks)
        else:
            drawn = family.sample_tasks(
                self._split_rng, family.num_train_tasks + family.num_test_tasks
            )
            self.train_tasks = drawn[: family.num_train_tasks]
            self.test_tasks = drawn[family.num_train_tasks :]

    def sample_train(self, num_tasks: int) -> list[Task]:
        """``num_tasks`` training tasks: fresh draws, or a draw from the fixed training set."""
        if self.train_tasks is None:
            return self.family.sample_tasks(self.rng, num_tasks)
        replace = num_tasks > len(self.train_tasks)
        index = self.rng.choice(len(self.train_tasks), size=num_tasks, replace=replace)
        return [dict(self.train_tasks[i]) for i in index]

    def held_out(self, split: str = "test") -> list[Task]:
        """The held-out tasks: ``test`` (the fixed split) or ``ood`` (out of distribution)."""
        if split == "test":
            return [dict(t) for t in self.test_tasks]
        if split == "ood":
            if self.family.sample_ood_tasks is None:
                raise MetaRLError(
                    f"env family {self.family.name!r} defines no out-of-distribution split; "
                    "accepted: --split test"
                )
            rng = np.random.default_rng(self._ood_seq)  # same tasks on every call
            return self.family.sample_ood_tasks(rng, self.family.num_test_tasks)
        raise MetaRLError(f"unknown split {split!r}; accepted: test, ood")

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def write(self, path: Path) -> None:
        """Write the family, seed and task split to ``path`` (JSON) so a run records its tasks."""
        payload = {
            "family": self.family.name,
            "seed": self.seed,
            "train_tasks": _to_jsonable(self.train_tasks) if self.train_tasks is not None else
            "resampled every iteration from the family's distribution",
            "test_tasks": _to_jsonable(self.test_tasks),
        }
        path.write_text(json.dumps(payload, indent=1))


def repeat_tasks(tasks: Sequence[Task], num_per_task: int) -> list[Task]:
    """Task list for a vector env with ``num_per_task`` consecutive sub-envs per task."""
    return [task for task in tasks for _ in range(num_per_task)]
