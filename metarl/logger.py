"""One logger per run: TensorBoard scalars plus plain files in the run directory.

The run directory holds ``config.yaml`` (the full resolved config), ``versions.json`` (package
versions, git revision, machine), ``tasks.json`` (the task split), ``metrics.jsonl`` (every
logged scalar, one JSON line per step) and the TensorBoard event files.  Tags are namespaced
(``train/``, ``loss/``, ``eval/``, ``time/``); the x-axis is environment steps.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import yaml
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.writer import FileWriter

from metarl.tasks import MetaRLError

PACKAGES = ("metarl", "torch", "gymnasium", "mujoco", "numpy", "tensorboard", "metaworld")


def environment_info() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "packages": versions,
        "git_revision": revision,
        "command": sys.argv,
    }


class Logger:
    """Writes scalars to TensorBoard and ``metrics.jsonl``; text and files to the run dir."""

    def __init__(self, run_dir: Path, *, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        threading.excepthook = _quiet_event_writer_errors
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        self._media_writer: FileWriter | None = None
        """Event file of pre-encoded media (GIFs), which SummaryWriter's public API cannot
        write without re-encoding through moviepy; opened at the first video."""
        self._metrics = (self.run_dir / "metrics.jsonl").open("a")

    def write_run_files(self, config: dict[str, Any]) -> None:
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (self.run_dir / "versions.json").write_text(json.dumps(environment_info(), indent=1))

    def log_scalars(self, scalars: dict[str, float], *, step: int, iteration: int | None = None) -> None:
        record = {"env_steps": step, **({"iteration": iteration} if iteration is not None else {}), **scalars}
        try:
            self._metrics.write(json.dumps(record) + "\n")
            self._metrics.flush()
        except OSError as error:  # a full disk or a file-size limit: one line, not a traceback
            raise MetaRLError(f"cannot write metrics {str(self._metrics.name)!r}: {error.strerror or error}") from None
        with self._events_errors():
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, global_step=step)

    @contextmanager
    def _events_errors(self) -> Iterator[None]:
        """TensorBoard writes from a thread of its own and re-raises its OSError on the next call."""
        try:
            yield
        except OSError as error:
            raise MetaRLError(f"cannot write TensorBoard events in {str(self.run_dir)!r}: "
                              f"{error.strerror or error}") from None

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """HParams tab: ``hparams`` flattened to dotted keys (``agent.inner_lr``), beside ``metrics``."""
        self.writer.add_hparams(flatten_hparams(hparams), metrics, run_name=".")

    def log_figure(self, tag: str, figure: Any, *, step: int) -> None:
        self.writer.add_figure(tag, figure, global_step=step)

    def log_video(self, tag: str, frames: Any, *, step: int, fps: float = 10.0) -> bytes:
        """An animated GIF of ``frames [T, H, W, 3]`` (uint8) as an image summary (TensorBoard's
        Images tab plays it; no moviepy needed).  Returns the GIF bytes."""
        import io

        import numpy as np
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        frames = np.asarray(frames, dtype=np.uint8)
        buffer = io.BytesIO()
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(1000 / fps), loop=0)
        gif = buffer.getvalue()
        T, H, W, C = frames.shape
        image = Summary.Image(height=H, width=W, colorspace=C, encoded_image_string=gif)
        if self._media_writer is None:
            self._media_writer = FileWriter(str(self.run_dir), filename_suffix=".media")
        self._media_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), global_step=step)
        return gif

    def log_text(self, tag: str, text: str, *, step: int = 0) -> None:
        self.writer.add_text(tag, text, global_step=step)

    def flush(self) -> None:
        self.writer.flush()
        if self._media_writer is not None:
            self._media_writer.flush()
        self._metrics.flush()

    def close(self) -> None:
        failures = []
        closers = [self.writer.close, self._metrics.close]
        if self._media_writer is not None:
            closers.append(self._media_writer.close)
        for close in closers:
            try:
                close()
            except OSError as error:  # what is still buffered cannot be written (a full disk)
                failures.append(error)
        if failures:
            raise MetaRLError(f"cannot finish writing logs in {str(self.run_dir)!r}: "
                              f"{failures[0].strerror or failures[0]}")


_default_thread_excepthook = threading.excepthook


def _quiet_event_writer_errors(args: Any) -> None:
    """TensorBoard's writer thread prints its OSError (a full disk) as a traceback before the
    main thread re-raises it; the main thread's one-line error is enough."""
    if not (issubclass(args.exc_type, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
        _default_thread_excepthook(args)


def flatten_hparams(tree: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """``{"evaluation": {"interval": 25}}`` -> ``{"evaluation.interval": 25}``; lists become text."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_hparams(value, prefix=f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
