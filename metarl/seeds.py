"""Several training seeds of one config in one command: a *group directory* holding one
ordinary run directory per seed (``GROUP_DIR/seed<k>``), trained side by side.

Each seed runs the normal single-seed :func:`metarl.train.train` with only ``seed`` and
``run_dir`` changed, so its run is the very run ``metarl train CONFIG seed=k`` makes (the
metrics are equal; ``tests/test_seeds.py``).  The group directory also holds
``group_config.yaml`` (the resolved config the seeds share) and ``group.json`` (the seeds), so
``--resume GROUP_DIR`` finishes what is unfinished: a finished seed is left alone, a seed with a
checkpoint resumes from it exactly, a seed that never reached one starts again.

Where the seeds run is a :class:`Launcher`: :class:`LocalProcesses` (a process pool on this
machine) or :class:`RayTasks` (one Ray task per seed, anywhere in a Ray cluster; the group
directory must then be on a file system every node sees).  Progress is read from each run's
``metrics.jsonl``, which every launcher that shares the file system provides for free.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Protocol, Sequence

import yaml
from tqdm import tqdm

from metarl.checkpoint import latest_checkpoint
from metarl.config import TrainConfig, load_config, to_dict
from metarl.logger import read_metrics
from metarl.tasks import MetaRLError

GROUP_FILE = "group.json"
GROUP_CONFIG = "group_config.yaml"


@dataclass(frozen=True)
class SeedJob:
    """One seed of a group: the single-seed config to train, and whether to resume it."""

    seed: int
    config: TrainConfig
    resume: bool
    """Continue from the run directory's latest checkpoint (else train from scratch)."""


def run_seed(job: SeedJob) -> str:
    """Train one seed exactly as ``metarl train`` would (in whatever process or machine the
    launcher chose); returns its run directory."""
    from metarl.train import train

    run_dir = Path(job.config.run_dir)
    return str(train(job.config, resume_from=run_dir if job.resume else None, quiet=True))


class Launcher(Protocol):
    def submit(self, job: SeedJob) -> Future:
        """Start ``run_seed(job)`` somewhere; the future's result is the run directory."""

    def close(self) -> None:
        ...


class LocalProcesses:
    """Seeds in a pool of local worker processes (spawned: each starts a fresh interpreter,
    as a separate ``metarl train`` would, with no state inherited from this one)."""

    def __init__(self, num_workers: int):
        self.pool = ProcessPoolExecutor(max_workers=num_workers, mp_context=get_context("spawn"))

    def submit(self, job: SeedJob) -> Future:
        return self.pool.submit(run_seed, job)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayTasks:
    """Seeds as Ray tasks (``metarl train CONFIG --seeds ... --ray-address auto``): each runs
    :func:`run_seed` in a Ray worker process on whichever node has ``cpus_per_seed`` CPUs free,
    as many at once as the cluster holds.  ``address``: as ``env_options.ray_address`` (``None``
    starts a local Ray on 127.0.0.1)."""

    def __init__(self, address: str | None, *, cpus_per_seed: float = 1.0):
        from metarl.envs import ray_workers

        ray_workers.connect(address)
        self._ray = ray_workers.ray
        self._run = self._ray.remote(num_cpus=cpus_per_seed, max_retries=0)(run_seed)
        self._refs: list = []

    def submit(self, job: SeedJob) -> Future:
        ref = self._run.remote(job)
        self._refs.append(ref)
        return ref.future()

    def close(self) -> None:
        for ref in self._refs:
            try:
                self._ray.cancel(ref)
            except Exception:  # finished already
                pass


def default_workers(num_seeds: int, torch_threads: int) -> int:
    """As many seeds at once as the cores allow (each run uses ``torch_threads`` for updates)."""
    return max(1, min(num_seeds, (os.cpu_count() or 1) // max(torch_threads, 1)))


def default_group_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.env}-{config.agent}-seeds-{stamp}"


def seed_config(config: TrainConfig, seed: int, group_dir: Path) -> TrainConfig:
    return replace(config, seed=seed, run_dir=str(group_dir / f"seed{seed}"), progress=False)


def _finished_iteration(run_dir: Path) -> int:
    path = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    return int(path.stem.split("_")[-1]) if path is not None else 0


def is_group_dir(path: Path) -> bool:
    return (Path(path) / GROUP_FILE).is_file()


def plan_group(config: TrainConfig, seeds: Sequence[int]) -> tuple[Path, list[SeedJob]]:
    """A new group: write its files and return one from-scratch job per seed."""
    if len(set(seeds)) != len(seeds):
        raise MetaRLError(f"--seeds lists a seed twice: {list(seeds)}; give distinct seeds")
    group_dir = Path(config.run_dir or default_group_dir(config))
    if group_dir.exists() and any(group_dir.iterdir()):
        raise MetaRLError(f"group directory {str(group_dir)!r} is not empty; continue it with "
                          f"--resume {group_dir} or choose another run_dir")
    group_dir.mkdir(parents=True, exist_ok=True)
    (group_dir / GROUP_CONFIG).write_text(yaml.safe_dump(to_dict(replace(config, run_dir="")), sort_keys=False))
    (group_dir / GROUP_FILE).write_text(json.dumps({"seeds": list(seeds)}))
    return group_dir, [SeedJob(seed, seed_config(config, seed, group_dir), resume=False) for seed in seeds]


def plan_resume(group_dir: Path, overrides: Sequence[str]) -> list[SeedJob]:
    """The unfinished seeds of ``group_dir`` (under the group's config and ``overrides``)."""
    group_dir = Path(group_dir)
    seeds = json.loads((group_dir / GROUP_FILE).read_text())["seeds"]
    jobs = []
    for seed in seeds:
        run_dir = group_dir / f"seed{seed}"
        config = load_config(group_dir / GROUP_CONFIG, [*overrides, f"seed={seed}", f"run_dir={run_dir}",
                                                         "progress=false"])
        done = _finished_iteration(run_dir)
        if done >= config.num_iterations:
            continue
        if done == 0 and run_dir.exists():
            shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to keep
        jobs.append(SeedJob(seed, config, resume=done > 0))
    return jobs


def _progress(run_dir: Path) -> tuple[int, float | None]:
    """Iterations done and the latest held-out return, from the run's ``metrics.jsonl``."""
    iteration, latest = 0, None
    for record in read_metrics(run_dir):
        iteration = record.get("iteration", iteration)
        latest = next((v for k, v in record.items() if k.startswith("eval/return_stage_")), latest)
    return iteration, latest


def run_group(jobs: Sequence[SeedJob], launcher: Launcher, *, poll_seconds: float = 1.0) -> list[Path]:
    """Run ``jobs`` on ``launcher`` with a progress line per seed (tqdm bars on a terminal,
    a line per finished seed otherwise).  Every seed runs to its end even when another fails;
    then a failure raises one error naming the seeds and how to resume."""
    show = sys.stderr.isatty()
    bars = {job.seed: tqdm(total=job.config.num_iterations, desc=f"seed {job.seed}", position=i,
                           unit="it", disable=not show, dynamic_ncols=True, leave=True)
            for i, job in enumerate(jobs)}
    futures = {job.seed: launcher.submit(job) for job in jobs}
    failures: dict[int, str] = {}
    pending = dict(futures)
    try:
        while pending:
            time.sleep(poll_seconds)
            for job in jobs:
                if job.seed not in pending:
                    continue
                iteration, latest = _progress(Path(job.config.run_dir))
                bars[job.seed].n = iteration
                if latest is not None:
                    bars[job.seed].set_postfix(eval=f"{latest:.1f}", refresh=False)
                bars[job.seed].refresh()
                future = pending[job.seed]
                if future.done():
                    del pending[job.seed]
                    error = future.exception()
                    if error is not None:
                        failures[job.seed] = f"{type(error).__name__}: {error}"
                    if not show:
                        status = f"failed ({failures[job.seed]})" if error else "done"
                        print(f"seed {job.seed}: {status}, iteration {iteration}/"
                              f"{job.config.num_iterations}, {job.config.run_dir}", file=sys.stderr)
    finally:
        for bar in bars.values():
            bar.close()
        launcher.close()
    if failures:
        raise MetaRLError("; ".join(f"seed {seed} failed: {message}" for seed, message in failures.items())
                          + f"; finish them with --resume {Path(jobs[0].config.run_dir).parent}")
    return [Path(job.config.run_dir) for job in jobs]
