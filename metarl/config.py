"""Typed configuration: frozen dataclasses with defaults; YAML files and ``key=value``
overrides only change those defaults, and an unknown or mistyped key is an error naming it.

A training config has a fixed top level (:class:`TrainConfig`) and an ``agent_options``
section validated against the chosen agent's own config dataclass (declared beside the agent).
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from metarl.tasks import MetaRLError


@dataclass(frozen=True)
class EvaluationConfig:
    """How held-out adaptation is measured (the same protocol for every agent)."""

    interval: int = 20
    """Evaluate on held-out tasks every this many iterations (0: only at the end of training)."""
    num_tasks: int = 40
    """Held-out tasks evaluated (at most the family's test split; MAML used 40)."""
    num_stages: int = 3
    """Adaptation stages after the first: gradient steps (MAML, and the gradient-based few-shot
    learners), further episodes (RL²), further trajectories (PEARL).  Stage 0 is the meta-learned
    state before adaptation; a metric-based few-shot learner has its one stage only."""
    episodes_per_stage: int = 40
    """RL: episodes per task and stage (MAML: the batch each gradient step is computed from; the
    MAML paper used 40 for 2D navigation and 20 for the MuJoCo families)."""
    protocol: str = "auto"
    """``stages`` (the adaptation curve above), ``adapt_then_evaluate`` (Meta-World's protocol,
    :mod:`metarl.adapt_then_evaluate`: success after a fixed adaptation budget) or ``auto``: the
    family's own (``TaskFamily.evaluation_protocol``); a run's config.yaml records the resolved one."""
    adaptation_episodes: int = 10
    """adapt_then_evaluate: episodes per task the agent adapts from (Meta-World: 10)."""
    evaluation_episodes: int = 3
    """adapt_then_evaluate: episodes per task scored after adapting (Meta-World: 3)."""
    num_rounds: int = 10
    """adapt_then_evaluate: rounds (``metaworld.evaluation.metalearning_evaluation``'s ``num_evals``)."""
    tasks_per_round: int = 20
    """adapt_then_evaluate: tasks per round, spread evenly over the classes (Meta-World's
    ``meta_batch_size`` of the evaluation envs: 20)."""
    goals_per_class: int = 40
    """adapt_then_evaluate: each class's rounds cycle through its first this many test goals
    (``metalearning_evaluation`` assumes 40)."""
    tasks_per_call: int = 0
    """adapt_then_evaluate: the most tasks one ``adapt`` call plays at once; a round of more is
    played in waves of this many (0: the whole round at once).  Every task of a call has sub-envs
    of its own (MAML: one per adaptation episode), and a Meta-World sub-env's simulator takes
    ~20 MB, so this caps evaluation's memory (a round of 50 goals x 10 MAML episodes: 500
    sub-envs, ~10 GB).  Deterministic, but not the numbers of one call: the action noise is
    drawn per call."""
    scored_actions: str = "mean"
    """adapt_then_evaluate: how the scored episodes act: ``mean`` (the policy's mean action, as
    Meta-World+'s reference agents' ``eval_action``) or ``sample`` (drawn, as while adapting)."""
    train_class_rounds: int = 1
    """adapt_then_evaluate on a benchmark with several training classes (ML10, ML45): rounds of
    the protocol on the training classes too, logged per class as ``eval_train_classes/``
    (0: held-out classes only)."""


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run.  The defaults train MAML-TRPO on 2D navigation."""

    env: str = "Navigation2D"
    """The task distribution: an RL task family, or a supervised few-shot task source
    (``Sinusoid``, ``Glyphs``, ``Omniglot``); ``metarl list`` shows both sides."""
    agent: str = "maml_trpo"
    """What meta-learns on it: an RL agent for a family, a few-shot learner for a source
    (``metarl list`` shows them apart)."""
    seed: int = 0
    """Seeds the task split, task draws, network initialisation and action noise."""
    device: str = "auto"
    """Where updates run: ``auto`` (cuda if available), ``cpu`` or ``cuda``. Rollouts run on CPU."""
    num_iterations: int = 100
    """Meta-training iterations (one meta-batch of tasks each)."""
    checkpoint_interval: int = 10
    """Write a checkpoint every this many iterations (and at the end)."""
    run_dir: str = ""
    """Where logs and checkpoints go; empty: ``runs/<env>-<agent>-seed<seed>-<time>``."""
    torch_threads: int = 0
    """Torch intra-op threads of the agents' updates; 0: every core this process may use.
    Rollouts always run on one (the other cores step the environments); results are
    reproducible for the same value on the same machine."""
    unit_actions: bool = True
    """Policies act in ``[-1, 1]``: a family whose action box is not ``±1`` (2D navigation, the
    point robots, Humanoid) rescales their actions onto its box and clips, as the papers'
    reference code does (``metarl.action_scaling``).  false: policies act in the env's units."""
    progress: bool = True
    """Show a progress bar when output is a terminal."""
    imports: tuple[str, ...] = ()
    """Modules imported before the run is built: a family or agent of your own (``metarl train
    --import MODULE`` sets it); recorded, so evaluate and resume need no flag."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    env_options: dict = field(default_factory=dict)
    """RL: passed to the family's vector-env constructor (e.g. ``engine``).  Supervised: the
    source's options (``path``, ``num_ways``, ...) and ``num_shots`` / ``num_query``."""
    agent_options: dict = field(default_factory=dict)
    """Overrides of the agent's (or learner's) own config dataclass (validated against it)."""


FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
"""A decimal number as researchers write it.  PyYAML follows YAML 1.1, where ``3e-4`` and ``1e8``
(no dot) are strings, so float keys also accept text of this form (YAML 1.2 reads it as a float)."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key)
            except MetaRLError as error:
                errors.append(str(error))
        raise MetaRLError(f"config key {key!r}: {value!r} is not a {_type_name(tp)}")
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise MetaRLError(f"config key {key!r}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return tuple(_coerce(v, item, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif is_dataclass(tp):
        if isinstance(value, dict):
            return build_dataclass(tp, value, prefix=f"{key}.")
        if isinstance(value, tp):
            return value
    else:
        return value
    raise MetaRLError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")


def build_dataclass(cls: type, values: dict[str, Any], *, prefix: str = "") -> Any:
    """Instantiate ``cls`` from ``values``, rejecting unknown keys and wrong types by name."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(map(str, set(values) - known))  # YAML keys may be numbers or null
    if unknown:
        raise MetaRLError(
            f"unknown config key {prefix + unknown[0]!r}; accepted: "
            + ", ".join(prefix + name for name in sorted(known))
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML-serialisable dict of a (nested) config dataclass."""
    def convert(value: Any) -> Any:
        if is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'agent_options.inner_lr=0.05'`` → ``(['agent_options', 'inner_lr'], 0.05)``."""
    if "=" not in text:
        raise MetaRLError(
            f"malformed override {text!r}; expected key=value, e.g. seed=1 or agent_options.inner_lr=0.05"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise MetaRLError(
            f"malformed override {text!r}; the key must be dotted names, e.g. evaluation.interval=10"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise MetaRLError(f"malformed override {text!r}: the value is not valid YAML") from None
    return key.split("."), value


def _set_nested(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MetaRLError(f"config key {'.'.join(path)!r}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        from metarl import configs as shipped_configs

        shipped = Path(shipped_configs.__file__).parent
        candidate = shipped / (path.name if path.suffix else f"{path.name}.yaml")
        if candidate.is_file():
            path = candidate
        else:
            names = sorted(p.stem for p in shipped.glob("*.yaml"))
            raise MetaRLError(
                f"config file {str(path)!r} not found; give a YAML path or a shipped config: "
                + ", ".join(names)
            )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise MetaRLError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise MetaRLError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return data


LEGACY_DEFAULTS: dict[str, Any] = {"unit_actions": False}
"""Values of keys that a run's ``config.yaml`` lacks because an older metarl wrote it, chosen to
reproduce that run: before ``unit_actions`` existed, policies acted in the env's own units.
Any other missing key takes its default (:func:`with_legacy_defaults` adds one nested key)."""


def with_legacy_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded config ``tree`` with :data:`LEGACY_DEFAULTS` for the keys it lacks, and
    ``evaluation.scored_actions: sample`` when it ran Meta-World's protocol before that key
    existed (its scored episodes sampled their actions; the default is now the mean)."""
    tree = {**LEGACY_DEFAULTS, **tree}
    evaluation = tree.get("evaluation")
    if (isinstance(evaluation, dict) and evaluation.get("protocol") == "adapt_then_evaluate"
            and "scored_actions" not in evaluation):
        tree["evaluation"] = {**evaluation, "scored_actions": "sample"}
    return tree


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), *,
                run_config: bool = False) -> TrainConfig:
    """Defaults ← YAML file (if any) ← ``key=value`` overrides, validated at every level.
    ``run_config``: ``path`` is a run directory's ``config.yaml`` (:data:`LEGACY_DEFAULTS` apply)."""
    tree: dict[str, Any] = read_yaml(path) if path is not None else {}
    if run_config:
        tree = with_legacy_defaults(tree)
    for text in overrides:
        keys, value = parse_override(text)
        _set_nested(tree, keys, value)
    config = build_dataclass(TrainConfig, tree)
    from metarl.registry import import_modules
    from metarl.runs import kind_of

    import_modules(config.imports)
    # The RL side or the supervised side, by the env's name; an unknown name lists both sides'.
    # Checks options by name before a run directory is made, and keeps the checked values
    # (``'3e-4'`` became 0.0003), so config.yaml records numbers.
    config = kind_of(config.env).check(config)
    if config.device not in ("auto", "cpu", "cuda"):
        raise MetaRLError(f"config key 'device': {config.device!r}; accepted: auto, cpu, cuda")
    return config


def agent_config(config: TrainConfig) -> Any:
    """The resolved options of the config's agent (RL) or learner (supervised)."""
    from metarl.runs import agent_config as resolved

    return resolved(config)


def resolved_agent_options(env: str, agent: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of ``agent`` (an RL agent or a supervised learner, on ``env``'s side):
    ``options`` checked (``'3e-4'`` becomes 0.0003) and the defaults for the rest, as plain values."""
    from metarl.runs import kind_of

    cls = kind_of(env).agent_config_class(agent)
    return to_dict(build_dataclass(cls, options, prefix="agent_options."))


def with_resolved_agent_options(config: TrainConfig) -> TrainConfig:
    """``config`` with every agent option written out, defaults included, so that a run's
    ``config.yaml`` and checkpoints rebuild the same agent after a later metarl changes the
    defaults (issue 15 changed MAML-TRPO's network)."""
    return replace(config, agent_options=resolved_agent_options(config.env, config.agent, config.agent_options))
