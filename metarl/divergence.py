"""Telling divergence apart from bugs: a non-finite loss, KL, gradient norm or parameter stops
training with one line (agent, iteration, quantity, the agent's step-size keys), never a tensor dump.

Agents report their losses, KLs and gradient norms under ``loss/``; parameters and optimiser
states are checked in the state that is about to be checkpointed, so no checkpoint holds a NaN.
A non-finite value often surfaces first inside ``torch.distributions`` (argument validation:
"Expected parameter loc ... but found invalid values"); only that exact error is turned into a
divergence stop, every other exception stays a bug with its traceback.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from metarl.tasks import MetaRLError

INVALID_DISTRIBUTION = re.compile(r"Expected parameter (\w+) .* of distribution (\w+)\(.*found invalid values")


class Diverged(MetaRLError):
    """Training produced a non-finite quantity."""


def non_finite_stat(stats: dict[str, float]) -> str | None:
    """The first ``loss/`` statistic that is NaN or infinite, as ``"loss/kl (nan)"``."""
    for name, value in stats.items():
        if name.startswith("loss/") and not math.isfinite(value):
            return f"{name} ({value})"
    return None


def non_finite_tensor(state: Any, prefix: str = "") -> str | None:
    """The dotted name of the first floating tensor in ``state`` (nested dicts and lists) holding
    a NaN or infinity, e.g. ``"policy.mean.0.weight"``."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not torch.isfinite(state).all():
            return prefix or "tensor"
        return None
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    for key, value in items:
        found = non_finite_tensor(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


def divergence_message(agent: str, iteration: int, quantity: str, *, step_size_keys: Sequence[str],
                       latest_checkpoint: str | None) -> str:
    kept = (f"the latest checkpoint {latest_checkpoint} is kept (--resume continues from it)"
            if latest_checkpoint else "no checkpoint was written")
    hint = (", ".join(f"agent_options.{key}" for key in step_size_keys)
            if step_size_keys else "the agent's step sizes")
    return (f"{agent} diverged at iteration {iteration}: {quantity} is not finite; {kept}; "
            f"try a smaller step size ({hint}) in a fresh run_dir")


@contextmanager
def invalid_distribution_is_divergence(message: Any) -> Iterator[None]:
    """Turn torch.distributions' "found invalid values" into :class:`Diverged` with
    ``message(quantity)``; any other ``ValueError`` passes through untouched."""
    try:
        yield
    except ValueError as error:
        match = INVALID_DISTRIBUTION.search(str(error).replace("\n", " "))
        if match is None:
            raise
        parameter, distribution = match.groups()
        raise Diverged(message(f"parameter {parameter!r} of a {distribution} distribution")) from None
