"""Few-shot task sources: the supervised counterpart of :class:`metarl.tasks.TaskFamily`.

A source draws tasks as plain JSON values from a seeded generator, exactly like a task family,
so the shared :class:`metarl.tasks.TaskSampler` gives it a fixed, reproducible test split (and
``tasks.json``); instead of environments it turns tasks into support and query sets
(:class:`FewShotBatch`).  Sources are registered by name with a factory, because some take
options (the Omniglot path, N-way, rotations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from metarl.supervised.batch import FewShotBatch
from metarl.tasks import MetaRLError, Task


@dataclass(frozen=True)
class FewShotTaskSource:
    """A distribution of few-shot tasks and how to draw their examples.

    ``make_batch(tasks, rng, num_shots, num_query)`` draws, for each task, ``num_shots`` support
    examples (per class for classification: K-shot) and ``num_query`` query examples (per class
    for classification) with ``rng``.
    """

    name: str
    description: str
    citation: str
    sample_tasks: Callable[[np.random.Generator, int], list[Task]]
    make_batch: Callable[[Sequence[Task], np.random.Generator, int, int], FewShotBatch]
    input_shape: tuple[int, ...]
    num_test_tasks: int
    num_classes: int | None = None
    """N-way for classification sources; ``None`` for regression."""
    sample_test_tasks: Callable[[np.random.Generator, int], list[Task]] | None = None
    """Test tasks from their own pool (Omniglot: the evaluation alphabets)."""
    num_train_tasks: int | None = None
    fixed_tasks: tuple[Task, ...] | None = None
    test_equals_train: bool = False
    sample_ood_tasks: Callable[[np.random.Generator, int], list[Task]] | None = None
    task_parameter: str | None = None

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None


@dataclass(frozen=True)
class SourceSpec:
    name: str
    description: str
    make: Callable[..., FewShotTaskSource]
    """``make(**options)`` builds the source (options such as ``path``, ``num_ways``)."""
    classification: bool = False
    """Whether its tasks are N-way classification (known before building: a metric-based learner
    on a regression source is refused when the config loads)."""


_SOURCES: dict[str, SourceSpec] = {}


def register_source(spec: SourceSpec) -> SourceSpec:
    _SOURCES[spec.name] = spec
    return spec


def list_sources() -> list[SourceSpec]:
    import metarl.supervised  # noqa: F401  (registers the shipped sources)

    return [_SOURCES[name] for name in sorted(_SOURCES)]


def source_names() -> list[str]:
    import metarl.supervised  # noqa: F401

    return sorted(_SOURCES)


def get_source_spec(name: str) -> SourceSpec:
    import metarl.supervised  # noqa: F401

    if name not in _SOURCES:
        raise MetaRLError(f"unknown task source {name!r}; accepted: {', '.join(sorted(_SOURCES))}")
    return _SOURCES[name]


def source_options(name: str) -> dict[str, Any]:
    """The options source ``name`` takes and their defaults (from its factory's signature)."""
    import inspect

    parameters = inspect.signature(get_source_spec(name).make).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def make_source(name: str, options: dict[str, Any] | None = None) -> FewShotTaskSource:
    """The registered source ``name`` built with ``options``; unknown names or options are errors."""
    import metarl.supervised  # noqa: F401

    if name not in _SOURCES:
        raise MetaRLError(f"unknown task source {name!r}; accepted: {', '.join(sorted(_SOURCES))}")
    try:
        return _SOURCES[name].make(**(options or {}))
    except TypeError as error:
        raise MetaRLError(f"task source {name!r}: bad options {sorted(options or {})}: {error}") from None
