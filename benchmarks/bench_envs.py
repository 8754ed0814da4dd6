"""Environment steps per second, policy in the loop: Gymnasium's vector envs vs ours.

One run measures, for HalfCheetah (``HalfCheetahVel-MAML``) and Ant (``AntVel``):

- the raw ``mj_step`` loop, no policy, on 1 thread (the per-core physics limit) and on 2 threads
  (what two cores of this machine give MuJoCo);
- Gymnasium ``SyncVectorEnv`` and ``AsyncVectorEnv`` over the family's Gymnasium id;
- ours, each design of ``make_vector_env(..., engine=...)``: ``"serial"``, ``"threads"`` (2),
  ``"processes"`` (2 workers, shared memory), ``"rollout"`` (``mujoco.rollout``, 2 threads;
  HalfCheetah only: Ant's observations need contact forces);

every row but the raw loops with a 64-64 tanh MLP torch policy (``torch.set_num_threads(1)``)
choosing each batch of actions.  Prints a table and the ratio ours / best Gymnasium.  The host's
load moves every figure by up to 2x within minutes, so after the table the best Gymnasium row
and the best row of ours are re-measured back to back ``--rounds`` times and the median of the
paired ratios is printed too.

    python benchmarks/bench_envs.py [--seconds 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from datetime import date
from functools import partial
from typing import Callable

import gymnasium
import mujoco
import numpy as np
import torch

from metarl.envs.engine import load_model
from metarl.envs.gym_ids import gym_id
from metarl.tasks import get_family

FAMILIES = {"HalfCheetah": ("HalfCheetahVel-MAML", "half_cheetah.xml"), "Ant": ("AntVel", "ant.xml")}
FRAME_SKIP = 5


def make_policy(observation_dim: int, action_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """A 64-64 tanh MLP with Gaussian noise: ``[B, observation_dim] -> [B, action_dim]``."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(observation_dim, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, action_dim),
    )

    @torch.no_grad()
    def act(observations: np.ndarray) -> np.ndarray:
        mean = network(torch.as_tensor(observations, dtype=torch.float32))
        return torch.clamp(mean + 0.3 * torch.randn_like(mean), -1.0, 1.0).numpy()

    return act


def timed(step: Callable[[], int], seconds: float) -> float:
    """Env steps per second of ``step`` (which returns how many env steps it took)."""
    step()  # warm up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += step()
    return steps / (time.perf_counter() - start)


def raw_mj_step(xml_file: str, seconds: float, num_threads: int = 1) -> float:
    """``mj_step`` loops with random controls, no policy, one per thread, summed."""
    model = load_model(xml_file)
    controls = np.random.default_rng(0).uniform(-1, 1, size=(64, model.nu))
    counts = [0] * num_threads
    stop = time.perf_counter() + seconds

    def loop(index: int) -> None:
        data = mujoco.MjData(model)
        while time.perf_counter() < stop:
            for control in controls:
                data.ctrl[:] = control
                mujoco.mj_step(model, data, nstep=FRAME_SKIP)
            mujoco.mj_resetData(model, data)
            counts[index] += len(controls)

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(index,)) for index in range(num_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def gymnasium_vector(family_name: str, num_envs: int, asynchronous: bool, seconds: float) -> float:
    fns = [lambda: gymnasium.make(gym_id(family_name)) for _ in range(num_envs)]
    envs = gymnasium.vector.AsyncVectorEnv(fns) if asynchronous else gymnasium.vector.SyncVectorEnv(fns)
    observations, _ = envs.reset(seed=0)
    policy = make_policy(observations.shape[1], envs.single_action_space.shape[0])

    def step() -> int:
        nonlocal observations
        for _ in range(20):
            observations, *_ = envs.step(policy(observations))
        return 20 * num_envs

    try:
        return timed(step, seconds)
    finally:
        envs.close()


def ours(family_name: str, num_envs: int, engine: str, seconds: float) -> float:
    family = get_family(family_name)
    envs = family.make_vector_env(num_envs, seed=0, engine=engine)
    envs.set_tasks(family.sample_tasks(np.random.default_rng(0), num_envs))
    observations = envs.reset()
    policy = make_policy(envs.observation_dim, envs.action_dim)
    elapsed = 0

    def step() -> int:
        nonlocal observations, elapsed
        for _ in range(20):
            observations, _, _, truncated, _ = envs.step(policy(observations))
            elapsed += 1
            if elapsed == envs.max_episode_steps:  # explicit reset at the horizon, as collect() does
                observations, elapsed = envs.reset(), 0
        return 20 * num_envs

    try:
        return timed(step, seconds)
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per row")
    parser.add_argument("--rounds", type=int, default=5, help="paired re-measurements of the best rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"# {date.today()} | {platform.processor() or platform.machine()} | "
        f"python {platform.python_version()} | torch {torch.__version__} | gymnasium "
        f"{gymnasium.__version__} | mujoco {mujoco.__version__} | numpy {np.__version__}"
    )
    print("| robot | engine | num_envs | env steps/s |")
    print("|---|---|---|---|")
    seconds = args.seconds
    summary = []
    for robot, (family, xml_file) in FAMILIES.items():
        designs: list[tuple[str, int, Callable[[], float]]] = [
            *[(f"raw mj_step loop, {threads} thread(s), no policy", threads,
               partial(raw_mj_step, xml_file, seconds, threads)) for threads in (1, 2)],
            *[("Gymnasium SyncVectorEnv", n, partial(gymnasium_vector, family, n, False, seconds))
              for n in (8, 32)],
            *[("Gymnasium AsyncVectorEnv", n, partial(gymnasium_vector, family, n, True, seconds))
              for n in (2, 8)],
            ("ours, serial", 32, partial(ours, family, 32, "serial", seconds)),
            *[("ours, threads (2)", n, partial(ours, family, n, "threads", seconds)) for n in (32, 64)],
            *[("ours, processes (2 workers)", n, partial(ours, family, n, "processes", seconds))
              for n in (64, 128)],
        ]
        if robot == "HalfCheetah":  # Ant observes contact forces, which rollout does not return
            designs += [("ours, rollout (2 threads)", n, partial(ours, family, n, "rollout", seconds))
                        for n in (64, 128, 256, 512)]
        rates = []
        for engine, num_envs, measure in designs:
            rates.append(measure())
            print(f"| {robot} | {engine} | {num_envs} | {rates[-1]:,.0f} |", flush=True)

        def best(prefix: str) -> int:
            return max((i for i, d in enumerate(designs) if d[0].startswith(prefix)), key=rates.__getitem__)

        gym_index, ours_index = best("Gymnasium"), best("ours")
        print(f"| {robot} | **ours / best Gymnasium** | | **{rates[ours_index] / rates[gym_index]:.2f}x** |")
        ratios = []
        for _ in range(args.rounds):  # paired re-measurements: the host's load drifts
            gym_rate, ours_rate = designs[gym_index][2](), designs[ours_index][2]()
            ratios.append(ours_rate / gym_rate)
        described = [f"{d[0]}, N={d[1]}" for d in (designs[ours_index], designs[gym_index])]
        summary.append(f"{robot}: {described[0]} / {described[1]}, {args.rounds} paired rounds: "
                       f"{', '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.2f}x")
    print()
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
