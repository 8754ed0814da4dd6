"""Every config key described for ``metarl train --help``: name, type, value, one-line doc.

The docs are the attribute docstrings the config dataclasses already carry (a string literal
right after a field), read from the class's source with :mod:`ast`: one source of truth, no
second copy to drift.  They are parsed once per class.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any


@dataclass(frozen=True)
class KeyDoc:
    """One config key as ``--help`` shows it."""

    key: str
    """Dotted name as an override takes it: ``agent_options.inner_lr``."""
    type: str
    value: Any
    """The config's value (the default when no config file or override sets it)."""
    default: Any
    doc: str
    """First sentence of the field's docstring ("" when it has none)."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass, from the string literal after each field."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (e.g. defined in a REPL)
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def first_sentence(doc: str) -> str:
    """The docstring's first sentence on one line, reST literals (````x````) unquoted."""
    text = " ".join(doc.split()).replace("``", "")
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.(?=\s+[A-Z]|$)", text)
    return text[: match.start() + 1] if match else text


def type_name(tp: Any) -> str:
    """``int``, ``tuple[int, ...]``, ``float | None`` as a reader writes them."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def describe(cls: type, values: Any = None, *, prefix: str = "") -> list[KeyDoc]:
    """A :class:`KeyDoc` per field of dataclass ``cls`` (nested dataclasses flattened to dotted
    keys); ``values``, an instance of ``cls``, supplies the values (default: the defaults)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows = []
    for f in fields(cls):
        default = _default(f)
        value = getattr(values, f.name) if values is not None else default
        if is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], value, prefix=f"{prefix}{f.name}.")
            continue
        rows.append(KeyDoc(prefix + f.name, type_name(hints[f.name]), value, default,
                           first_sentence(docs.get(f.name, ""))))
    return rows


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return "''" if value == "" else str(value)


def format_keys(rows: list[KeyDoc]) -> str:
    """One line per key: ``key  type  value  doc``, with ``(default: d)`` where the value differs."""
    key_width = max(len(row.key) for row in rows)
    type_width = max(len(row.type) for row in rows)
    value_width = min(max(len(_show(row.value)) for row in rows), 24)
    lines = []
    for row in rows:
        doc = row.doc
        if row.default is not MISSING and row.value != row.default:
            doc = f"{doc} (default: {_show(row.default)})".strip()
        lines.append(f"  {row.key:<{key_width}}  {row.type:<{type_width}}  "
                     f"{_show(row.value):<{value_width}}  {doc}".rstrip())
    return "\n".join(lines)


def train_keys_help(config_path: str | None, overrides: list[str]) -> str:
    """Every key ``metarl train`` accepts: the run's (:class:`TrainConfig`, its ``evaluation``)
    and the chosen agent's ``agent_options``, with the values ``config_path`` and
    ``overrides`` give (the defaults when neither is given)."""
    from metarl.config import TrainConfig, agent_config, load_config

    config = load_config(config_path, overrides)
    resolved = agent_config(config)
    rows = [row for row in describe(TrainConfig, config) if row.key != "agent_options"]
    rows += describe(type(resolved), resolved, prefix="agent_options.")
    source = " ".join([config_path or "defaults", *overrides])
    return (f"config keys (KEY  TYPE  VALUE for {source}  DOC); set any with key=value, e.g. "
            "evaluation.interval=10 agent_options.meta_batch_size=10\n"
            f"agent_options are {type(resolved).__name__}'s, the options of agent={config.agent} "
            "(pick another agent to see its own):\n" + format_keys(rows))


def _count(n: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


TIME_LINE = "# time per iteration:"
"""The header-comment line of a shipped config that states its measured time per iteration."""


def shipped_configs_table() -> str:
    """A line per shipped config: family (or few-shot source), agent (or learner), iterations,
    training env steps (supervised: labelled examples) and gradient steps in all (from the
    side's ``budget``), and the time per iteration measured on 2 CPU cores (the config's
    ``# time per iteration:`` comment)."""
    from pathlib import Path

    from metarl import configs
    from metarl.config import load_config, read_yaml
    from metarl.runs import kind_of
    from metarl.envs.metaworld import available as metaworld_available, is_metaworld_name

    rows = [("config", "family", "agent", "iterations", "env steps|examples", "grad steps", "time per iteration (2 CPU cores)")]
    for path in sorted(Path(configs.__file__).parent.glob("*.yaml")):
        timing = next((line[len(TIME_LINE):].strip() for line in path.read_text().splitlines()
                       if line.startswith(TIME_LINE)), "not measured")
        raw = read_yaml(path)
        if is_metaworld_name(str(raw.get("env", ""))) and not metaworld_available():
            # Listed all the same: the budget needs the family, which needs the extra.
            rows.append((path.stem, str(raw["env"]), str(raw.get("agent", "?")),
                         str(raw.get("num_iterations", "?")), "-", "-",
                         f"(budget: needs the metaworld extra) {timing}"))
            continue
        config = load_config(path)
        budget = kind_of(config.env).budget(config)
        rows.append((path.stem, config.env, config.agent, str(config.num_iterations),
                     _count(budget.env_steps) if budget else "?",
                     _count(budget.gradient_steps) if budget else "?", timing))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
                     for row in rows)
