"""Gymnasium ids for the task families: ``gymnasium.make("metarl/<family name>-v0", task=...)``.

:func:`metarl.tasks.register_family` registers them; this module keeps the name function and,
for family modules written before issue 14, ``register_gym_id``.
"""

from __future__ import annotations

import warnings

from metarl.tasks import TaskFamily, gym_id, register_family

__all__ = ["gym_id", "register_gym_id"]


def register_gym_id(family: TaskFamily) -> TaskFamily:
    """Deprecated: ``register_family`` now registers the Gymnasium id too.  Kept so that
    ``register_gym_id(register_family(TaskFamily(...)))`` in a user's module keeps working."""
    warnings.warn("register_gym_id is no longer needed: register_family(TaskFamily(...)) registers the "
                  "Gymnasium id too (family.gym_id)", DeprecationWarning, stacklevel=2)
    if family.make_env is None:
        raise ValueError(f"family {family.name!r} has no make_env to register with Gymnasium")
    return family if family.gym_id is not None else register_family(family)
