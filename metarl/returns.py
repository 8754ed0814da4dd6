"""Returns and advantages: pure functions over time-major ``[T, ...]`` tensors.

Bootstrapping follows the termination/truncation distinction: a terminated step has no future
value; a truncated step (time limit) bootstraps from the value of ``s'``.
"""

from __future__ import annotations

import torch


def discounted_returns(
    rewards: torch.Tensor, mask: torch.Tensor, *, discount: float
) -> torch.Tensor:
    """Reward-to-go ``G_t = sum_k discount^k r_{t+k}`` within each masked episode.

    ``rewards``, ``mask``: ``[T, ...]``; padding (mask 0) contributes nothing.  Returns ``[T, ...]``.
    """
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = (rewards[t] + discount * running) * mask[t]
        returns[t] = running
    return returns


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_ends: torch.Tensor,
    mask: torch.Tensor,
    *,
    discount: float,
    gae_lambda: float,
) -> torch.Tensor:
    """GAE(γ, λ) (Schulman et al., 2016, eq. 16), all tensors ``[T, ...]``.

    ``next_values[t]`` is ``V(s'_t)``; it is used unless ``terminated[t]`` (no bootstrap after a
    true terminal state, but bootstrap on truncation).  ``episode_ends[t]`` stops the recursion
    (for RL², pass the trial boundaries here and episode terminations in ``terminated``).
    Padding steps (``mask`` 0) get advantage 0.
    """
    not_terminal = 1.0 - terminated.to(rewards.dtype)
    continues = 1.0 - episode_ends.to(rewards.dtype)
    deltas = rewards + discount * not_terminal * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = (deltas[t] + discount * gae_lambda * continues[t] * running) * mask[t]
        advantages[t] = running
    return advantages


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` is 1."""
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def normalize_advantages(
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    dim: int | tuple[int, ...] | None = None,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """Zero-mean, unit-variance advantages over the masked entries, per slice along the
    dimensions *not* in ``dim`` (all dimensions when ``dim`` is None).  Padding stays 0."""
    if dim is None:
        dim = tuple(range(advantages.dim()))
    count = mask.sum(dim, keepdim=True).clamp_min(1.0)
    mean = (advantages * mask).sum(dim, keepdim=True) / count
    variance = (((advantages - mean) ** 2) * mask).sum(dim, keepdim=True) / count
    return (advantages - mean) / (variance.sqrt() + epsilon) * mask
