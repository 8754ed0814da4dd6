"""Checkpoints: everything needed to resume a run exactly (parameters, optimiser and RNG states,
counters), written atomically so an interrupted run loses at most one checkpoint interval.

A checkpoint holds data, never code: every state is tensors and plain Python values (numpy's
bit-generator state is a dict of ints, torch generator states are byte tensors), and loading uses
``torch.load(weights_only=True)``, whose unpickler refuses every other global.  A run directory
from someone else can therefore be evaluated or resumed without running anything of theirs.
"""

from __future__ import annotations

import io
import os
import pickle
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
    # Serialised in memory first: a full disk then surfaces as the OSError of a plain write
    # ("No space left on device") rather than as an opaque error from torch's zip writer.
    buffer = io.BytesIO()
    torch.save({"iteration": iteration, **state}, buffer)
    try:
        with open(tmp, "wb") as file:
            file.write(buffer.getbuffer())
        os.replace(tmp, path)  # atomic: a crash mid-write never leaves a torn checkpoint
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise MetaRLError(f"cannot write checkpoint {str(path)!r}: {error.strerror or error}; the previous "
                          "checkpoint is kept; free space and continue with --resume") from None
    return path


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def latest_checkpoint(run_dir: Path) -> Path | None:
    directory = Path(run_dir) / CHECKPOINT_DIR
    paths = sorted(directory.glob("iteration_*.pt"))
    return paths[-1] if paths else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as tensors and plain values; anything else is refused unread."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message explains its own API over several lines; the line that names the
        # refused global ("Unsupported global: GLOBAL posix.system ...") is the one to show.
        reason = next((line.strip() for line in str(error).splitlines()
                       if "GLOBAL" in line or "Unsupported" in line), _first_line(error))
        raise MetaRLError(
            f"checkpoint {str(path)!r} holds more than tensors and plain data ({reason.rstrip('.')}); "
            "it was not loaded, since loading it could run code: metarl checkpoints never need this"
        ) from None
    except (OSError, RuntimeError, EOFError) as error:
        raise MetaRLError(f"cannot read checkpoint {str(path)!r}: {_first_line(error)}") from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise MetaRLError(f"checkpoint {str(path)!r} is not a metarl checkpoint (no iteration in it)")
    return state


def check_compatible(checkpoint_config: dict[str, Any], config: dict[str, Any]) -> None:
    """A checkpoint resumes only under the config it was written with (bar the run length).

    A key the checkpoint's config lacks (written by an older metarl, before the key existed)
    counts as its :data:`~metarl.config.LEGACY_DEFAULTS` value, else its default; so does an
    agent option either side leaves out (older metarl recorded only the options given)."""
    from metarl.config import TrainConfig, resolved_agent_options, to_dict, with_legacy_defaults

    ignored = {"num_iterations", "run_dir", "progress"}
    checkpoint_config = {**to_dict(TrainConfig()), **with_legacy_defaults(checkpoint_config)}
    if isinstance(config.get("evaluation"), dict) and isinstance(checkpoint_config.get("evaluation"), dict):
        # An evaluation option the checkpoint lacks (evaluation.protocol and the protocol's
        # options, added later) is the one now: its run was written before the option existed.
        checkpoint_config["evaluation"] = {**config["evaluation"], **checkpoint_config["evaluation"]}
    checkpoint_config["agent_options"] = resolved_agent_options(
        checkpoint_config["env"], checkpoint_config["agent"], checkpoint_config["agent_options"])
    config = {**config, "agent_options": resolved_agent_options(
        config["env"], config["agent"], config["agent_options"])}
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
