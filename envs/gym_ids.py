"""Gymnasium ids for the task families: ``gymnasium.make("metarl/<family name>-v0", task=...)``."""

from __future__ import annotations

import gymnasium

from metarl.tasks import TaskFamily


def gym_id(family_name: str) -> str:
    """The Gymnasium id of a family, e.g. ``metarl/HalfCheetahVel-PEARL-v0``."""
    return f"metarl/{family_name}-v0"


def register_gym_id(family: TaskFamily) -> TaskFamily:
    """Register ``family.make_env`` under :func:`gym_id` with the family's horizon as time limit.

    The family's single env takes ``task=None`` (then a default task) as keyword argument.
    """
    if family.make_env is None:
        raise ValueError(f"family {family.name!r} has no make_env to register with Gymnasium")
    env_id = gym_id(family.name)
    if env_id in gymnasium.registry:
        del gymnasium.registry[env_id]  # re-registering replaces, as register_family does
    gymnasium.register(
        id=env_id,
        entry_point=family.make_env,
        max_episode_steps=family.max_episode_steps,
    )
    family.metadata["gym_id"] = env_id
    return family
