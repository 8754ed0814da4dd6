"""Networks: a Gaussian MLP policy and MAML's linear feature baseline.

The policy's layers broadcast over leading parameter dimensions, so the same module runs with
ordinary parameters (``W [out, in]``, inputs ``[B, in]``) or with a batch of per-task parameters
through ``torch.func.functional_call`` (``W [N, out, in]``, inputs ``[N, M, in]``).  This is how
MAML adapts all tasks of a meta-batch in one batched forward with no module copies.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class BroadcastLinear(nn.Module):
    """``y = x W^T + b`` where ``W`` may carry leading batch dims matching ``x``'s."""

    def __init__(self, in_features: int, out_features: int, *, generator: torch.Generator):
        super().__init__()
        # Xavier-uniform weights (as pytorch-maml-rl), zero bias: a small, symmetric start.
        limit = math.sqrt(6.0 / (in_features + out_features))
        self.weight = nn.Parameter(
            (torch.rand(out_features, in_features, generator=generator) * 2 - 1) * limit
        )
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight.transpose(-1, -2)) + self.bias.unsqueeze(-2)


class MLP(nn.Module):
    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_sizes: Sequence[int],
        *,
        activation: str,
        generator: torch.Generator,
    ):
        super().__init__()
        sizes = [input_dim, *hidden_sizes, output_dim]
        self.layers = nn.ModuleList(
            BroadcastLinear(i, o, generator=generator) for i, o in zip(sizes[:-1], sizes[1:])
        )
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian policy: ``mean = MLP(obs)``, state-independent learned ``log_std``.

    ``forward(observations [..., O]) -> Normal`` with batch shape ``[..., A]``.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_std: float = 1.0,
        min_std: float = 1e-6,
        generator: torch.Generator,
    ):
        super().__init__()
        self.mean = MLP(observation_dim, action_dim, hidden_sizes, activation=activation, generator=generator)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))
        self.min_log_std = math.log(min_std)
        self.observation_dim = observation_dim
        self.action_dim = action_dim

    def forward(self, observations: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mean(observations)
        log_std = self.log_std.clamp_min(self.min_log_std).unsqueeze(-2)
        return torch.distributions.Normal(mean, log_std.exp().expand_as(mean))


class LinearFeatureBaseline:
    """The time-varying linear baseline of Duan et al. (2016) used by MAML.

    Features of a step: ``[o, o^2, t, t^2, t^3, 1]`` with ``t = step / 100``; weights fitted by
    ridge regression on the discounted returns, one independent fit per task (leading dim ``N``).
    """

    def __init__(self, *, reg_coeff: float = 1e-5):
        self.reg_coeff = reg_coeff

    @staticmethod
    def features(observations: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``observations [T, ..., O]``, ``timesteps [T, ...]`` → ``[T, ..., 2O + 4]``."""
        obs = observations.clamp(-10, 10)
        t = (timesteps / 100.0).unsqueeze(-1)
        return torch.cat([obs, obs**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)

    def fit_predict(
        self,
        observations: torch.Tensor,
        next_observations: torch.Tensor,
        returns: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit per task and return ``(values, next_values)``, both ``[T, N, E]``.

        ``observations``/``next_observations`` ``[T, N, E, O]``, ``returns``/``mask`` ``[T, N, E]``.
        """
        T, N, E, _ = observations.shape
        steps = torch.arange(T, dtype=torch.float64, device=observations.device)
        timesteps = steps.view(T, 1, 1).expand(T, N, E)
        features = self.features(observations.double(), timesteps)
        next_features = self.features(next_observations.double(), timesteps + 1)
        F = features.shape[-1]
        X = (features * mask.double().unsqueeze(-1)).permute(1, 0, 2, 3).reshape(N, T * E, F)
        y = (returns.double() * mask.double()).permute(1, 0, 2).reshape(N, T * E, 1)
        gram = X.transpose(1, 2) @ X
        rhs = X.transpose(1, 2) @ y
        eye = torch.eye(F, dtype=torch.float64, device=X.device)
        reg = self.reg_coeff
        # Increase the ridge until the system is well posed (as rllab's baseline does).
        for _ in range(5):
            weights, info = torch.linalg.solve_ex(gram + reg * eye, rhs)
            if bool((info == 0).all()) and torch.isfinite(weights).all():
                break
            reg *= 10
        weights = weights.squeeze(-1)  # [N, F]
        values = torch.einsum("tnef,nf->tne", features, weights)
        next_values = torch.einsum("tnef,nf->tne", next_features, weights)
        return values.to(returns.dtype), next_values.to(returns.dtype)
