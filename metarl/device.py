"""Where updates run: ``auto`` picks CUDA when present; rollouts always step on the CPU.

On a GPU, as on the CPU, the same seed gives the same numbers run after run: choosing CUDA
switches PyTorch to its deterministic kernels (``torch.use_deterministic_algorithms``, cuDNN's
deterministic convolutions and no autotuning, cuBLAS's fixed workspace), without which the
convolutional few-shot learners' losses varied in the 6th digit between two runs on an H200.
An operation with no deterministic CUDA kernel warns once instead of failing.
"""

from __future__ import annotations

import os

import torch

from metarl.tasks import MetaRLError


def deterministic_cuda() -> None:
    """Make CUDA computations repeat exactly (process-wide, before the first cuBLAS call)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MetaRLError("device 'cuda' requested but no CUDA GPU is available; accepted here: auto, cpu")
        deterministic_cuda()
        return torch.device("cuda")
    raise MetaRLError(f"unknown device {name!r}; accepted: auto, cpu, cuda")
