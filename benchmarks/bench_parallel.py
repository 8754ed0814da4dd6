"""Parallel stepping for every family: serial vs worker processes vs Ray actors, policy in the loop.

One run measures env steps per second, with a 64-64 tanh MLP torch policy (1 torch thread)
choosing every batch of actions, for

- Meta-World ML10 (mixed task classes, ``--num-envs`` sub-envs, needs ``.[metaworld]``):
  ``serial`` (today's one-core path), ``processes`` (2 workers), ``ray`` with 1 and 2
  single-CPU workers (a local Ray started by metarl on 127.0.0.1), ``auto``, and Meta-World's own
  Gymnasium ``AsyncVectorEnv`` / ``SyncVectorEnv`` (``gym.make_vec("Meta-World/ML10-train")``) at
  the same number of sub-envs;
- HalfCheetah (``HalfCheetahVel-MAML``, 64 sub-envs): the local engines (``rollout``,
  ``threads``), ``serial``, ``processes`` and ``ray``;

then Ray's added cost (a round trip per step and worker, and per sub-env, measured on 2D
navigation, whose own step costs microseconds), paired re-measurements of the ratios the issue
asks for (median of ``--rounds``), and, from the measured costs, the number of workers at which
the driver (one learner, acting for the whole batch) saturates, for MAML-TRPO, RL² and PEARL
iteration shapes.

    python benchmarks/bench_parallel.py [--seconds 6] [--num-envs 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from typing import Any, Callable

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import gymnasium  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from metarl.envs import metaworld as metaworld_envs  # noqa: E402
from metarl.envs.parallel import build_vector_env  # noqa: E402
from metarl.tasks import TaskSampler, get_family  # noqa: E402

RESULTS: list[tuple[str, str, int, float]] = []


def make_policy(observation_dim: int, action_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """A 64-64 tanh MLP with Gaussian noise: ``[B, observation_dim] -> [B, action_dim]``."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(observation_dim, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, action_dim),
    )

    @torch.no_grad()
    def act(observations: np.ndarray) -> np.ndarray:
        mean = network(torch.as_tensor(observations, dtype=torch.float32))
        return torch.clamp(mean + 0.3 * torch.randn_like(mean), -1.0, 1.0).numpy()

    return act


def steps_per_second(env, tasks, seconds: float) -> float:
    """Env steps per second of ``env`` (our VectorTaskEnv) with the policy choosing actions."""
    act = make_policy(env.observation_dim, env.action_dim)
    env.set_tasks(tasks)
    observations = env.reset()
    for _ in range(5):  # warm-up: first touches of memory, thread pools, actor code
        observations = env.step(act(observations))[0]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        observations, _, terminated, truncated, _ = env.step(act(observations))
        steps += 1
        if (terminated | truncated).all():
            observations = env.reset()
    return steps * env.num_envs / (time.perf_counter() - start)


def gymnasium_steps_per_second(env, num_envs: int, seconds: float) -> float:
    """The same for a Gymnasium vector env (Meta-World's own); it autoresets itself."""
    act = make_policy(env.single_observation_space.shape[0], env.single_action_space.shape[0])
    env.call("sample_tasks")  # Meta-World's ML envs hold no task until asked to draw one
    observations, _ = env.reset(seed=0)
    for _ in range(5):
        observations = env.step(act(observations))[0]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        observations = env.step(act(observations))[0]
        steps += 1
    return steps * num_envs / (time.perf_counter() - start)


def measure(label: str, family: str, engine: str, build: Callable[[], Any], tasks, seconds: float) -> float:
    env = build()
    try:
        rate = steps_per_second(env, tasks, seconds)
    finally:
        env.close()
    RESULTS.append((family, label, len(tasks), rate))
    print(f"  {family:12s} {label:34s} N={len(tasks):4d} {rate:10,.0f} env steps/s", flush=True)
    return rate


def metaworld_own(strategy: str, num_envs: int, seconds: float) -> float:
    import metaworld  # noqa: F401  (registers the Meta-World/* ids)

    env = gymnasium.make_vec("Meta-World/ML10-train", vector_strategy=strategy,
                             meta_batch_size=num_envs, seed=0)
    try:
        rate = gymnasium_steps_per_second(env, num_envs, seconds)
    finally:
        env.close()
    RESULTS.append(("ML10", f"Meta-World's own {strategy} vector env", num_envs, rate))
    print(f"  {'ML10':12s} {'Meta-World ' + strategy + ' (gym.make_vec)':34s} N={num_envs:4d} "
          f"{rate:10,.0f} env steps/s", flush=True)
    return rate


def mixed_ml10_tasks(num_envs: int):
    """``num_envs`` ML10 training tasks cycling through the 10 classes (mixed in every slice)."""
    family = get_family("ML10")
    train = TaskSampler(family, 0).train_tasks
    by_class: dict[str, list] = {}
    for task in train:
        by_class.setdefault(task["env_name"], []).append(task)
    classes = sorted(by_class)
    return family, [by_class[classes[i % len(classes)]][i // len(classes)] for i in range(num_envs)]


def ray_overheads(seconds: float) -> tuple[float, float]:
    """Ray's added time per step: per call (a round trip to each worker, in parallel) and per
    sub-env, from 2D navigation (its own step costs microseconds) with 2 workers."""
    family = get_family("Navigation2D")
    rates = {}
    for num_envs in (2, 512):
        tasks = family.sample_tasks(np.random.default_rng(0), num_envs)
        for engine, extra in (("serial", {}), ("ray", {"num_workers": 2})):
            env = build_vector_env(family, num_envs, engine=engine, **extra)
            rates[engine, num_envs] = steps_per_second(env, tasks, seconds) / num_envs
            env.close()
    per_call = 1 / rates["ray", 2] - 1 / rates["serial", 2]
    per_call_512 = 1 / rates["ray", 512] - 1 / rates["serial", 512]
    per_env = max(0.0, (per_call_512 - per_call) / 510)
    return per_call, per_env


def policy_seconds(observation_dim: int, action_dim: int, num_envs: int) -> float:
    act = make_policy(observation_dim, action_dim)
    observations = np.zeros((num_envs, observation_dim), dtype=np.float32)
    for _ in range(20):
        act(observations)
    start = time.perf_counter()
    for _ in range(200):
        act(observations)
    return (time.perf_counter() - start) / 200


SHAPES = {
    # sub-envs stepped together by one sampler call, per agent (the shipped configs' shapes, and
    # for ML10 the Meta-World paper's appendix: 20 tasks a meta-batch, 10 episodes per task).
    "MAML-TRPO": {"ML10": 20 * 10, "HalfCheetah": 40 * 20},
    "RL²": {"ML10": 20 * 1, "HalfCheetah": 20 * 1},
    "PEARL": {"ML10": 1, "HalfCheetah": 1},
}
"""RL² steps ``meta_batch_size x trials_per_task`` trials side by side; PEARL collects one
trajectory per task at a time (its posterior is updated between trajectories)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--num-envs", type=int, default=20, help="ML10 sub-envs (a multiple of 10)")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    torch.set_num_threads(1)
    if not metaworld_envs.available():
        raise SystemExit("this benchmark needs the metaworld extra: pip install -e '.[metaworld,ray]'")
    import ray

    seconds, n = options.seconds, options.num_envs
    print(f"# {date.today()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
          f"torch {torch.__version__} · gymnasium {gymnasium.__version__} · mujoco {mujoco.__version__} "
          f"· ray {ray.__version__} · numpy {np.__version__}")
    ml10, tasks = mixed_ml10_tasks(n)
    rows: dict[str, Callable[[], float]] = {
        "serial": lambda: measure("serial (today's path)", "ML10", "serial",
                                  lambda: build_vector_env(ml10, n, engine="serial"), tasks, seconds),
        "processes": lambda: measure("processes, 2 workers", "ML10", "processes",
                                     lambda: build_vector_env(ml10, n, engine="processes", num_workers=2),
                                     tasks, seconds),
        "ray1": lambda: measure("ray, 1 worker", "ML10", "ray",
                                lambda: build_vector_env(ml10, n, engine="ray", num_workers=1), tasks, seconds),
        "ray2": lambda: measure("ray, 2 workers", "ML10", "ray",
                                lambda: build_vector_env(ml10, n, engine="ray", num_workers=2), tasks, seconds),
        "async": lambda: metaworld_own("async", n, seconds),
    }
    print("Meta-World ML10, mixed classes:")
    first = {name: row() for name, row in rows.items()}
    metaworld_own("sync", n, seconds)
    measure("auto", "ML10", "auto", lambda: build_vector_env(ml10, n), tasks, seconds)

    cheetah = get_family("HalfCheetahVel-MAML")
    cheetah_tasks = TaskSampler(cheetah, 0).sample_train(64)
    print("HalfCheetah:")
    for label, engine, extra in [("rollout (local, 2 threads)", "rollout", {}),
                                 ("threads (local, 2)", "threads", {}),
                                 ("serial", "serial", {}),
                                 ("processes, 2 workers", "processes", {"num_workers": 2}),
                                 ("ray, 1 worker", "ray", {"num_workers": 1}),
                                 ("ray, 2 workers", "ray", {"num_workers": 2})]:
        measure(label, "HalfCheetah", engine,
                lambda: build_vector_env(cheetah, 64, engine=engine, **extra), cheetah_tasks, seconds)

    print("Paired re-measurements (back to back, median of the ratios):")
    pairs = {"processes / serial": ("processes", "serial"),
             "processes / Meta-World async": ("processes", "async"),
             "ray 2 workers / processes 2 workers": ("ray2", "processes")}
    ratios: dict[str, list[float]] = {name: [first[a] / first[b]] for name, (a, b) in pairs.items()}
    for _ in range(options.rounds - 1):
        for name, (a, b) in pairs.items():
            ratios[name].append(rows[a]() / rows[b]())
    for name, values in ratios.items():
        print(f"  {name:38s} " + ", ".join(f"{v:.2f}" for v in values)
              + f"  -> median {statistics.median(values):.2f}x")

    per_call, per_env = ray_overheads(seconds / 2)
    print(f"Ray's added cost per env step: {per_call * 1e6:,.0f} µs a call (one round trip to each "
          f"worker, in parallel), {per_env * 1e6:.2f} µs per sub-env")

    # Sub-env step cost from the serial rows; the driver's cost per step: policy + Ray's call.
    costs = {"ML10": 1 / first["serial"],
             "HalfCheetah": 1 / next(r for f, label, _, r in RESULTS if f == "HalfCheetah" and label == "serial")}
    dims = {"ML10": (39, 4), "HalfCheetah": (20, 6)}
    print("Workers at which one learner's driver saturates (sub-env cost x N / (policy + round trip)):")
    for agent, shape in SHAPES.items():
        cells = []
        for family, num_envs in shape.items():
            driver = policy_seconds(*dims[family], num_envs) + per_call + per_env * num_envs
            workers = costs[family] * num_envs / driver
            cells.append(f"{family} N={num_envs}: {workers:,.1f}")
        print(f"  {agent:10s} " + "; ".join(cells))
    ray.shutdown()


if __name__ == "__main__":
    main()
