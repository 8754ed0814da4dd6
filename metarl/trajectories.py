"""Time-major trajectory container: every array is ``[T, B, ...]`` with a ``[T, B]`` mask."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from metarl.tasks import MetaRLError


@dataclass(frozen=True)
class Trajectories:
    """One episode per column ``b`` of a batch, padded to ``T`` steps.

    Shapes (``T`` steps, ``B`` episodes, ``O`` observation dim, ``A`` action dim):
    ``observations [T, B, O]``, ``actions [T, B, A]`` (the policy's sample, before the env
    clips it), ``rewards [T, B]``, ``next_observations [T, B, O]`` (``s'``; valid on truncation,
    so values can bootstrap there), ``terminated [T, B]`` and ``truncated [T, B]`` (bool),
    ``mask [T, B]`` (1.0 on steps that happened, 0.0 on padding after the episode ended), and
    ``infos``: name → ``[T, B]`` (reward terms, ``success``).
    Columns are task-major: episodes ``[i * E, (i + 1) * E)`` belong to task ``i``.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    mask: torch.Tensor
    infos: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.observations.dim() != 3:
            raise MetaRLError(
                f"observations must be [T, B, O]; got shape {tuple(self.observations.shape)}"
            )
        T, B = self.observations.shape[:2]
        expected = {
            "actions": (T, B),
            "rewards": (T, B),
            "next_observations": (T, B),
            "terminated": (T, B),
            "truncated": (T, B),
            "mask": (T, B),
        }
        for name, prefix in expected.items():
            shape = tuple(getattr(self, name).shape)
            if shape[:2] != prefix:
                raise MetaRLError(f"{name} has shape {shape}; expected leading dims [T, B] = {prefix}")
        for name, value in self.infos.items():
            if tuple(value.shape[:2]) != (T, B):
                raise MetaRLError(
                    f"infos[{name!r}] has shape {tuple(value.shape)}; expected leading [T, B] = {(T, B)}"
                )

    @property
    def num_steps(self) -> int:
        return self.observations.shape[0]

    @property
    def num_episodes(self) -> int:
        return self.observations.shape[1]

    @property
    def dones(self) -> torch.Tensor:
        """``[T, B]`` bool: the episode ended at this step (terminated or truncated)."""
        return self.terminated | self.truncated

    def episode_returns(self) -> torch.Tensor:
        """``[B]`` undiscounted return of each episode."""
        return (self.rewards * self.mask).sum(dim=0)

    def episode_lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=0)

    def episode_success(self) -> torch.Tensor | None:
        """``[B]`` 1.0 where the ``success`` flag was set at any step, or None if undefined."""
        if "success" not in self.infos:
            return None
        return ((self.infos["success"].float() * self.mask).amax(dim=0) > 0).float()

    def to(self, device: torch.device | str) -> "Trajectories":
        return Trajectories(
            observations=self.observations.to(device),
            actions=self.actions.to(device),
            rewards=self.rewards.to(device),
            next_observations=self.next_observations.to(device),
            terminated=self.terminated.to(device),
            truncated=self.truncated.to(device),
            mask=self.mask.to(device),
            infos={k: v.to(device) for k, v in self.infos.items()},
        )

    def by_task(self, num_tasks: int) -> "Trajectories":
        """Reshape columns ``B = num_tasks * E`` into ``[T, num_tasks, E, ...]`` views (task-major)."""
        if self.num_episodes % num_tasks:
            raise MetaRLError(f"{self.num_episodes} episodes do not split into {num_tasks} tasks")
        E = self.num_episodes // num_tasks

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], num_tasks, E, *x.shape[2:])

        return _Unchecked(
            observations=split(self.observations),
            actions=split(self.actions),
            rewards=split(self.rewards),
            next_observations=split(self.next_observations),
            terminated=split(self.terminated),
            truncated=split(self.truncated),
            mask=split(self.mask),
            infos={k: split(v) for k, v in self.infos.items()},
        )


@dataclass(frozen=True)
class _Unchecked(Trajectories):
    """Same fields with an extra task dimension ``[T, N, E, ...]`` (produced by ``by_task``)."""

    def __post_init__(self) -> None:
        pass
