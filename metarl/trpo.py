"""Trust-region step (Schulman et al., 2015): conjugate gradient on the Fisher-vector product,
then a backtracking line search on the KL constraint and the surrogate improvement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def conjugate_gradient(
    matrix_vector_product: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    num_iterations: int = 10,
    residual_tolerance: float = 1e-10,
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given ``x ↦ A x``."""
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_norm = residual @ residual
    for _ in range(num_iterations):
        if residual_norm < residual_tolerance:
            break
        product = matrix_vector_product(direction)
        alpha = residual_norm / (direction @ product)
        x = x + alpha * direction
        residual = residual - alpha * product
        new_norm = residual @ residual
        direction = residual + (new_norm / residual_norm) * direction
        residual_norm = new_norm
    return x


@dataclass(frozen=True)
class LineSearchResult:
    accepted: bool
    step_fraction: float
    """Fraction of the full natural-gradient step taken (0.0 when rejected)."""
    num_backtracks: int
    loss_before: float
    loss_after: float
    kl: float


def backtracking_line_search(
    evaluate: Callable[[torch.Tensor], tuple[float, float]],
    full_step: torch.Tensor,
    *,
    loss_before: float,
    max_kl: float,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
) -> LineSearchResult:
    """Find the largest ``ratio^i * full_step`` that lowers the loss and keeps KL ≤ ``max_kl``.

    ``evaluate(step)`` returns ``(loss, mean_kl)`` for parameters ``θ + step``.
    """
    loss, kl = loss_before, 0.0
    for i in range(max_backtracks):
        fraction = backtrack_ratio**i
        loss, kl = evaluate(fraction * full_step)
        if loss < loss_before and kl <= max_kl:
            return LineSearchResult(True, fraction, i, loss_before, loss, kl)
    return LineSearchResult(False, 0.0, max_backtracks, loss_before, loss, kl)


def trust_region_step(
    parameters: list[torch.Tensor],
    gradient: torch.Tensor,
    fisher_product: Callable[[torch.Tensor], torch.Tensor],
    evaluate: Callable[[], tuple[float, float]],
    *,
    loss_before: float,
    max_kl: float,
    cg_iterations: int,
    cg_damping: float,
    backtrack_ratio: float,
    max_backtracks: int,
) -> LineSearchResult:
    """One TRPO update of ``parameters`` in place (Schulman et al., 2015, appendix C).

    Solves ``(F + damping I) s = g`` by conjugate gradient, scales ``s`` so the quadratic KL
    model equals ``max_kl``, then backtracks until ``evaluate()`` (the loss and mean KL at the
    parameters as currently set) shows an improvement inside the trust region.  A rejected step
    leaves the parameters exactly as they were.
    """

    def damped(vector: torch.Tensor) -> torch.Tensor:
        return fisher_product(vector) + cg_damping * vector

    direction = conjugate_gradient(damped, gradient, num_iterations=cg_iterations)
    curvature = direction @ damped(direction)
    full_step = -direction * torch.sqrt(2.0 * max_kl / curvature.clamp_min(1e-12))
    original = flatten([p.detach() for p in parameters]).clone()

    def evaluate_step(step: torch.Tensor) -> tuple[float, float]:
        set_flat(parameters, original + step)
        return evaluate()

    result = backtracking_line_search(
        evaluate_step, full_step, loss_before=loss_before, max_kl=max_kl,
        backtrack_ratio=backtrack_ratio, max_backtracks=max_backtracks,
    )
    set_flat(parameters, original + result.step_fraction * full_step if result.accepted else original)
    return result


def line_search_stats(result: LineSearchResult, gradient: torch.Tensor) -> dict[str, float]:
    """The ``loss/`` scalars every TRPO-based agent logs about its step."""
    return {
        "loss/surrogate_before": result.loss_before,
        "loss/surrogate_after": result.loss_after if result.accepted else result.loss_before,
        "loss/kl": result.kl if result.accepted else 0.0,
        "loss/line_search_accepted": float(result.accepted),
        "loss/line_search_step_fraction": result.step_fraction,
        "loss/line_search_backtracks": float(result.num_backtracks),
        "loss/gradient_norm": gradient.norm().item(),
    }


def set_flat(parameters: list[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy a flat vector into ``parameters`` (in place, outside autograd)."""
    with torch.no_grad():
        for p, value in zip(parameters, unflatten_like(flat, parameters)):
            p.copy_(value)


def flatten(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for t in like:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out
