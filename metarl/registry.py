"""Agent registry (task families are registered in :mod:`metarl.tasks`)."""

from __future__ import annotations

from metarl.agent import AgentSpec
from metarl.tasks import MetaRLError

_AGENTS: dict[str, AgentSpec] = {}


def register_agent(spec: AgentSpec) -> AgentSpec:
    _AGENTS[spec.name] = spec
    return spec


def get_agent_spec(name: str) -> AgentSpec:
    import metarl.agents  # noqa: F401  (registers the shipped agents)

    if name not in _AGENTS:
        raise MetaRLError(f"unknown agent {name!r}; accepted: {', '.join(sorted(_AGENTS))}")
    return _AGENTS[name]


def list_agents() -> list[AgentSpec]:
    import metarl.agents  # noqa: F401

    return [_AGENTS[name] for name in sorted(_AGENTS)]
