"""Agent registry (task families are registered in :mod:`metarl.tasks`)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

from metarl.agent import AgentSpec
from metarl.tasks import MetaRLError

_AGENTS: dict[str, AgentSpec] = {}


def register_agent(spec: AgentSpec) -> AgentSpec:
    _AGENTS[spec.name] = spec
    return spec


def import_modules(names: Sequence[str]) -> None:
    """Import the user's modules that register a family or an agent (config key ``imports``),
    looking in the working directory too, as ``python -m`` would."""
    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise MetaRLError(f"config key 'imports': cannot import {name!r} ({error}); give a module "
                              "importable from the working directory or PYTHONPATH") from None


def get_agent_spec(name: str) -> AgentSpec:
    import metarl.agents  # noqa: F401  (registers the shipped agents)

    if name not in _AGENTS:
        raise MetaRLError(f"unknown agent {name!r}; accepted: {', '.join(sorted(_AGENTS))}")
    return _AGENTS[name]


def list_agents() -> list[AgentSpec]:
    import metarl.agents  # noqa: F401

    return [_AGENTS[name] for name in sorted(_AGENTS)]
