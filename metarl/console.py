"""What the libraries we build on may print: MuJoCo's C-level warnings pass through here.

MuJoCo prints every warning of its C library to stdout and appends it to ``MUJOCO_LOG.TXT`` in
the working directory, once per model compiled.  A run compiles the same Gymnasium asset once
per sub-env, so one harmless deprecation in Gymnasium's own ``half_cheetah.xml``
(``settotalmass``, deprecated by MuJoCo 3.3) used to bury the real output dozens of times.
:func:`route_mujoco_warnings` installs a handler that drops the known ones (they are about
Gymnasium's files, not ours, and change nothing: MuJoCo still applies the attribute) and
hands every other message to Python's :mod:`warnings`, once per distinct message, so a real
problem is still shown (and ``-W error`` still turns it into an error).
"""

from __future__ import annotations

import re
import warnings

import mujoco

KNOWN_MUJOCO_WARNINGS = (
    "compiler attribute 'settotalmass' is deprecated",
)
"""Prefixes of MuJoCo warnings that are known, harmless and not ours to fix (Gymnasium 1.x's
``half_cheetah.xml`` sets ``settotalmass="14"``; MuJoCo 3.3+ warns and still applies it)."""


class MuJoCoWarning(UserWarning):
    """A warning raised by MuJoCo's C library (e.g. an unstable simulation)."""


_shown: set[str] = set()


def _message_key(message: str) -> str:
    """The message without its numbers (time, DOF index), so a warning repeated at every step
    or for every sub-env counts once."""
    return re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", message.strip())


def handle_mujoco_warning(message: str) -> None:
    """MuJoCo's warning callback: drop the known ones, show each other one once."""
    message = message.strip()
    if message.startswith(KNOWN_MUJOCO_WARNINGS):
        return
    key = _message_key(message)
    if key in _shown:
        return
    _shown.add(key)
    warnings.warn(f"MuJoCo: {message}", MuJoCoWarning, stacklevel=2)


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings through :func:`handle_mujoco_warning` (process-wide, idempotent:
    importing :mod:`metarl.envs` calls it, in worker processes too)."""
    mujoco.set_mju_user_warning(handle_mujoco_warning)
