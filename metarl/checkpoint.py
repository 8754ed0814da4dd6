"""Checkpoints: everything needed to resume a run exactly (parameters, optimiser and RNG states,
counters), written atomically so an interrupted run loses at most one checkpoint interval."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from metarl.tasks import MetaRLError

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any]) -> Path:
    directory = Path(run_dir) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"iteration_{iteration:06d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"iteration": iteration, **state}, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-write never leaves a torn checkpoint
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    directory = Path(run_dir) / CHECKPOINT_DIR
    paths = sorted(directory.glob("iteration_*.pt"))
    return paths[-1] if paths else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as error:
        raise MetaRLError(f"cannot read checkpoint {str(path)!r}: {error}") from None


def check_compatible(checkpoint_config: dict[str, Any], config: dict[str, Any]) -> None:
    """A checkpoint resumes only under the config it was written with (bar the run length)."""
    ignored = {"num_iterations", "run_dir", "progress"}
    differences = [
        key for key in sorted(set(checkpoint_config) | set(config))
        if key not in ignored and checkpoint_config.get(key) != config.get(key)
    ]
    if differences:
        key = differences[0]
        raise MetaRLError(
            f"checkpoint is from another config: {key!r} is {checkpoint_config.get(key)!r} in the "
            f"checkpoint but {config.get(key)!r} now; resume with the run's own config.yaml "
            "(only num_iterations may change)"
        )
