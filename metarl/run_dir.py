"""The run directory's two rules: one run per directory, one writer at a time.

A writer (``metarl train``, ``--resume``, ``evaluate``) holds an OS lock on ``RUN_DIR/.lock`` for
as long as it runs.  The lock is ``flock(2)``: the kernel releases it when the process exits,
however it exits (``kill -9`` included), so a stale lock file never blocks anyone; the file only
records the holder's PID for the error message.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from metarl.tasks import MetaRLError

LOCK_FILE = ".lock"
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints")
"""Any of these means the directory already holds a run."""


@contextmanager
def locked_run_dir(run_dir: Path, *, create: bool = True) -> Iterator[Path]:
    """Hold ``run_dir``'s writer lock for the body (``create``: make the directory if needed); a
    second holder gets a one-line :class:`MetaRLError` naming the process that has it."""
    run_dir = Path(run_dir)
    if not create and not run_dir.is_dir():
        raise MetaRLError(f"run directory {str(run_dir)!r} does not exist; pass a directory made by 'metarl train'")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise MetaRLError(f"cannot use run directory {str(run_dir)!r}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            raise MetaRLError(
                f"run directory {str(run_dir)!r} is in use by process {holder}; wait for it to "
                "finish (or stop it), or give another run_dir"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield run_dir
    finally:
        os.close(handle)  # closing releases the lock


def holds_run(run_dir: Path) -> bool:
    return any((Path(run_dir) / name).exists() for name in RUN_MARKERS)


def claim_for_new_run(run_dir: Path, *, overwrite: bool) -> None:
    """Make sure a fresh run starts in a directory of its own (call with the lock held).  With
    ``overwrite`` the old run's files are removed first, so two runs' files never mix."""
    run_dir = Path(run_dir)
    if not holds_run(run_dir):
        return
    if not overwrite:
        raise MetaRLError(
            f"run directory {str(run_dir)!r} already holds a run; continue it with "
            f"'metarl train --resume {run_dir}', give a fresh run_dir=..., or pass --overwrite to "
            "delete it and start again"
        )
    for entry in run_dir.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
