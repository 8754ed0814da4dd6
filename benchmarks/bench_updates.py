"""Meta-update time of MAML-TRPO and RL² on the CPU and, when CUDA is available, on the GPU.

Each agent is built from a shipped config (``load_config`` of the config with ``device=...``)
and its training iteration is timed on a *replayed* batch: the first iteration samples its
episodes from the family's envs and records them; every later iteration gets the same episodes
back from the recording, so what is timed is the update alone (MAML-TRPO: the inner adaptation
from the first batch and the outer TRPO step with its conjugate gradient and line search, second
order; RL²: PPO's epochs over the trials, truncated BPTT), with the data moved to the device as
in training.  The agent really updates each time (its parameters move on), as in training.

Prints one row per (config, device): seconds per update (median of the timed iterations after
one untimed warm-up), and the CPU/GPU ratio; writes the table with machine, versions and date
to ``--output``.  (PEARL's gradient steps: ``bench_pearl_update.py``.)

    python benchmarks/bench_updates.py [--iterations 3] [--output /tmp/update_results.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any, Sequence

import torch

from metarl.config import load_config
from metarl.rl_run import build_rl_run
from metarl.rollout import Sampler
from metarl.tasks import Task
from metarl.trajectories import Trajectories

CONFIGS: dict[str, list[str]] = {
    # name: [shipped config, overrides...]
    "MAML-TRPO, HalfCheetahVel (40 tasks x 20 episodes x 200 steps, 100x100)":
        ["maml_trpo_half_cheetah_vel"],
    "RL², HalfCheetahVel (20 tasks x 5 trials x 2 episodes x 200 steps, GRU 64)":
        ["rl2_half_cheetah_vel"],
    "RL², HalfCheetahVel with rl2_ml1_reach's network and epochs (GRU 256, 10 epochs, BPTT 250)":
        ["rl2_half_cheetah_vel", "agent_options.hidden_size=256", "agent_options.head_sizes=[256]",
         "agent_options.num_epochs=10", "agent_options.num_minibatches=5",
         "agent_options.truncation_length=250"],
}


class ReplaySampler(Sampler):
    """A :class:`Sampler` that records the calls of its first iteration, then hands the same
    trajectories back, call for call, in every later iteration (the actor is not run)."""

    def __init__(self, sampler: Sampler) -> None:
        self.__dict__.update(sampler.__dict__)
        self.recording: list[Trajectories] = []
        self.replaying = False
        self.position = 0

    def sample(self, tasks: Sequence[Task], actor: Any, *, episodes_per_task: int) -> Trajectories:
        if not self.replaying:
            trajectories = super().sample(tasks, actor, episodes_per_task=episodes_per_task)
            self.recording.append(trajectories)
            return trajectories
        trajectories = self.recording[self.position % len(self.recording)]
        self.position += 1
        return trajectories


def seconds_per_update(overrides: list[str], device: str, iterations: int, workers: int) -> float:
    config = load_config(overrides[0], [*overrides[1:], f"device={device}", "progress=false",
                                "env_options.engine=processes", f"env_options.num_workers={workers}"])
    run = build_rl_run(config)
    sampler = ReplaySampler(run.sampler)
    try:
        tasks = run.task_sampler.sample_train(run.agent.meta_batch_size)
        run.agent.train_iteration(tasks, sampler)  # samples and records; also the warm-up
        sampler.replaying = True
        times = []
        for _ in range(iterations):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run.agent.train_iteration(tasks, sampler)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        run.sampler.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3, help="timed updates per row (after one warm-up)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--only", default="", help="run only the configs whose name contains this text")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name, overrides in CONFIGS.items():
        if args.only not in name:
            continue
        times = {device: seconds_per_update(overrides, device, args.iterations, max(1, cores - 1))
                 for device in devices}
        gpu = times.get("cuda")
        cells = [f"{times['cpu']:.2f}", "-", "-"] if gpu is None else \
            [f"{times['cpu']:.2f}", f"{gpu:.2f}", f"{times['cpu'] / gpu:.1f}x"]
        rows.append(f"| {name} | {' | '.join(cells)} |")
        print(rows[-1], flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CUDA not available)"
    header = (f"Date {date.today()}; machine {platform.machine()}, {cores} logical CPUs (CPU rows: "
              f"{cores} torch threads); GPU {gpu}; Python {platform.python_version()}, torch "
              f"{torch.__version__}; load average at the end {os.getloadavg()[0]:.1f}.\n\n"
              "| update (config) | CPU s/update | GPU s/update | CPU / GPU |\n|---|---|---|---|\n")
    table = header + "\n".join(rows) + "\n"
    print(table)
    if args.output is not None:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
