"""Where updates run: ``auto`` picks CUDA when present; rollouts always step on the CPU."""

from __future__ import annotations

import torch

from metarl.tasks import MetaRLError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MetaRLError("device 'cuda' requested but no CUDA GPU is available; accepted here: auto, cpu")
        return torch.device("cuda")
    raise MetaRLError(f"unknown device {name!r}; accepted: auto, cpu, cuda")
