"""PEARL update throughput: gradient steps per second of :meth:`PEARL.gradient_step`.

Paper-sized networks (policy and twin Q 300x300x300, encoder 200x200x200, latent 5), a
meta-batch of 16 tasks, RL batch 256 per task, context 100 per task, HalfCheetah shapes
(observation 17, action 6), replay buffers filled with 2,000 random transitions per task.
One step = encoder + critic + policy (+ α) updates and the target average, all 16 tasks in
one batched forward.  Runs on the CPU (1 and all torch threads) and, when CUDA is available,
on the GPU.  Prints a table and writes it with machine, versions and date to ``--output``.

    python benchmarks/bench_pearl_update.py [--seconds 10] [--output /tmp/pearl_results.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

from metarl.agents.pearl import PEARL, PEARLConfig

OBSERVATION_DIM, ACTION_DIM = 17, 6
NUM_TASKS, TRANSITIONS_PER_TASK = 16, 2000
CONFIG = PEARLConfig(meta_batch_size=16, batch_size=256, embedding_batch_size=100,
                     hidden_sizes=(300, 300, 300), encoder_hidden_sizes=(200, 200, 200),
                     latent_dim=5, buffer_capacity=TRANSITIONS_PER_TASK)


def filled_agent(device: torch.device, *, auto_entropy: bool) -> PEARL:
    generator = torch.Generator().manual_seed(0)
    config = PEARLConfig(**{**CONFIG.__dict__, "auto_entropy": auto_entropy})
    agent = PEARL(config, observation_dim=OBSERVATION_DIM, action_dim=ACTION_DIM,
                  num_train_tasks=NUM_TASKS, device=device, generator=generator)
    for slot in range(NUM_TASKS):
        M = TRANSITIONS_PER_TASK
        transitions = {
            "observations": torch.randn(M, OBSERVATION_DIM, generator=generator),
            "actions": torch.rand(M, ACTION_DIM, generator=generator) * 2 - 1,
            "rewards": torch.randn(M, 1, generator=generator),
            "next_observations": torch.randn(M, OBSERVATION_DIM, generator=generator),
            "terminals": torch.zeros(M, 1),
        }
        agent.replay.add(slot, transitions)
        agent.encoder_replay.add(slot, {k: v for k, v in transitions.items() if k != "terminals"})
    return agent


def steps_per_second(device: torch.device, *, seconds: float, auto_entropy: bool) -> tuple[float, int]:
    """Gradient steps per second over about ``seconds`` after warm-up; returns (rate, steps)."""
    agent = filled_agent(device, auto_entropy=auto_entropy)
    slots = torch.arange(NUM_TASKS, device=device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):  # warm-up: allocator, kernels, Adam state
        agent.gradient_step(slots)
    synchronize()
    start = time.perf_counter()
    steps = 0
    while True:
        agent.gradient_step(slots)
        steps += 1
        if steps % 10 == 0 or device.type == "cpu":
            synchronize()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return steps / elapsed, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per row")
    parser.add_argument("--output", type=Path, default=Path("/tmp/pearl_results.md"))
    options = parser.parse_args()

    rows = []
    cpu_threads = sorted({1, os.cpu_count() or 1})
    for threads in cpu_threads:
        torch.set_num_threads(threads)
        rate, steps = steps_per_second(torch.device("cpu"), seconds=options.seconds, auto_entropy=False)
        rows.append((f"CPU, {threads} torch thread{'s' if threads > 1 else ''}", rate, steps))
    if torch.cuda.is_available():
        torch.set_num_threads(1)
        for auto in (False, True):
            rate, steps = steps_per_second(torch.device("cuda"), seconds=options.seconds, auto_entropy=auto)
            rows.append((f"GPU {torch.cuda.get_device_name()}{', auto α' if auto else ''}", rate, steps))

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CUDA not available)"
    lines = [
        "## PEARL update throughput (benchmarks/bench_pearl_update.py)",
        "",
        f"Date {date.today().isoformat()}; machine {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} logical CPUs; GPU {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}; load average at the end {os.getloadavg()[0]:.1f} (a shared "
        "machine slows the CPU rows).",
        "Paper-sized nets (policy and twin Q 300x300x300, encoder 200x200x200, latent 5), "
        "meta-batch 16, batch 256, context 100, HalfCheetah shapes (obs 17, action 6).",
        "",
        "| device | gradient steps / s | steps timed |",
        "|---|---|---|",
        *[f"| {name} | {rate:.2f} | {steps} |" for name, rate, steps in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with options.output.open("a") as handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    main()
