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
iteration shapes.  Whole episodes through ``metarl.rollout.collect`` (what a sampler runs) compare
Ray's two granularities against the processes engine: ``episode`` (the default; each worker runs
its slice's episode with a copy of the policy) and ``step`` (a call per env step).

    python benchmarks/bench_parallel.py [--seconds 6] [--num-envs 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import gymnasium  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_envs import make_policy  # noqa: E402  (the same 64-64 MLP policy as the engine benchmark)
from metarl.envs import metaworld as metaworld_envs  # noqa: E402
from metarl.envs.parallel import build_vector_env  # noqa: E402
from metarl.rollout import collect  # noqa: E402
from metarl.tasks import TaskSampler, get_family  # noqa: E402

RESULTS: list[tuple[str, str, int, float]] = []


class Stepper:
    """One engine, built once, measured as often as asked: env steps per second with the policy
    choosing every batch of actions (episodes restart when all sub-envs are done)."""

    def __init__(self, label: str, env: Any, tasks=None, *, gymnasium_env: bool = False) -> None:
        self.label, self.env, self.gymnasium_env = label, env, gymnasium_env
        if gymnasium_env:
            self.num_envs = env.num_envs
            self.act = make_policy(env.single_observation_space.shape[0], env.single_action_space.shape[0])
            env.call("sample_tasks")  # Meta-World's ML envs hold no task until asked to draw one
            self.observations = env.reset(seed=0)[0]
        else:
            self.num_envs = env.num_envs
            self.act = make_policy(env.observation_dim, env.action_dim)
            env.set_tasks(tasks)
            self.observations = env.reset()
        self.rates: list[float] = []
        self.measure(0.2)  # warm-up: first touches of memory, thread pools, actor code
        self.rates.clear()

    def measure(self, seconds: float) -> float:
        env = self.env
        if not self.gymnasium_env:  # every measurement from a reset, as a rollout runs
            self.observations = env.reset()
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            if self.gymnasium_env:  # it autoresets itself
                self.observations = env.step(self.act(self.observations))[0]
            else:
                self.observations, _, terminated, truncated, _ = env.step(self.act(self.observations))
                if (terminated | truncated).all():
                    self.observations = env.reset()
            steps += 1
        rate = steps * self.num_envs / (time.perf_counter() - start)
        if hasattr(env, "pool"):  # a rollout cut short: no compiled graph left polling meanwhile
            env.pool.drop_graph()
        self.rates.append(rate)
        return rate

    def close(self) -> None:
        self.env.close()


class BenchActor:
    """The same 64-64 tanh MLP as :func:`make_policy`, as an actor for ``metarl.rollout.collect``
    (noise from its own generator, so that copies on Ray workers draw what it draws)."""

    def __init__(self, observation_dim: int, action_dim: int) -> None:
        torch.manual_seed(0)
        self.network = torch.nn.Sequential(
            torch.nn.Linear(observation_dim, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
            torch.nn.Tanh(), torch.nn.Linear(64, action_dim))
        self.generator = torch.Generator().manual_seed(0)

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        mean = self.network(observations)
        return torch.clamp(mean + 0.3 * torch.randn(mean.shape, generator=self.generator), -1.0, 1.0)


class Collector:
    """Whole episodes through ``metarl.rollout.collect`` (what a sampler runs): env steps per
    second, the policy's forward passes and, on Ray with episode granularity, the driver
    following the workers' episodes included."""

    def __init__(self, label: str, env: Any, tasks) -> None:
        self.label, self.env, self.num_envs = label, env, env.num_envs
        self.actor = BenchActor(env.observation_dim, env.action_dim)
        env.set_tasks(tasks)
        self.rates: list[float] = []
        collect(env, self.actor)  # warm-up

    def measure(self, seconds: float) -> float:
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += int(collect(self.env, self.actor).mask.sum())
        rate = steps / (time.perf_counter() - start)
        self.rates.append(rate)
        return rate

    def close(self) -> None:
        self.env.close()


def compare(title: str, steppers: dict[str, Stepper], seconds: float, rounds: int,
            pairs: dict[str, tuple[str, str]]) -> None:
    """Measure every engine ``rounds`` times, interleaved (the host's load drifts), and print the
    median rate of each and the median of each pair's per-round ratios."""
    for _ in range(rounds):
        for stepper in steppers.values():
            stepper.measure(seconds)
    print(title)
    for stepper in steppers.values():
        median = statistics.median(stepper.rates)
        RESULTS.append((title, stepper.label, stepper.num_envs, median))
        print(f"  {stepper.label:38s} N={stepper.num_envs:4d} {median:10,.0f} env steps/s   (rounds: "
              + ", ".join(f"{r:,.0f}" for r in stepper.rates) + ")", flush=True)
    for name, (a, b) in pairs.items():
        ratios = [x / y for x, y in zip(steppers[a].rates, steppers[b].rates)]
        print(f"  {name:44s} " + ", ".join(f"{r:.2f}" for r in ratios)
              + f"  -> median {statistics.median(ratios):.2f}x")


def mixed_ml10_tasks(num_envs: int):
    """``num_envs`` ML10 training tasks cycling through the 10 classes (mixed in every slice)."""
    family = get_family("ML10")
    train = TaskSampler(family, 0).train_tasks
    by_class: dict[str, list] = {}
    for task in train:
        by_class.setdefault(task["env_name"], []).append(task)
    classes = sorted(by_class)
    return family, [by_class[classes[i % len(classes)]][i // len(classes)] for i in range(num_envs)]


def ray_overheads(seconds: float, compiled: bool) -> tuple[float, float]:
    """Ray's added time per step: per call (a round trip to each worker, in parallel) and per
    sub-env, from 2D navigation (its own step costs microseconds) with 2 workers, through the
    compiled graph or ordinary actor calls."""
    family = get_family("Navigation2D")
    step_seconds = {}
    for num_envs in (2, 512):
        tasks = family.sample_tasks(np.random.default_rng(0), num_envs)
        for engine, extra in (("serial", {}), ("ray", {"num_workers": 2, "ray_compiled_graph": compiled})):
            env = build_vector_env(family, num_envs, engine=engine, **extra)
            env.set_tasks(tasks)
            actions = np.zeros((num_envs, env.action_dim))
            timed, steps, start = 0.0, 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                env.reset()  # not timed: a compiled graph is built here
                began = time.perf_counter()
                for _ in range(env.max_episode_steps - 1):  # within the episode: the graph stays
                    env.step(actions)
                timed += time.perf_counter() - began
                steps += env.max_episode_steps - 1
            step_seconds[engine, num_envs] = timed / steps
            env.close()
    per_call = step_seconds["ray", 2] - step_seconds["serial", 2]
    per_call_512 = step_seconds["ray", 512] - step_seconds["serial", 512]
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
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--num-envs", type=int, default=50,
                        help="ML10 sub-envs (a multiple of 10 that divides 500: Meta-World's own "
                        "vector env spreads the 50 goals of each class evenly over them)")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    torch.set_num_threads(1)
    if not metaworld_envs.available():
        raise SystemExit("this benchmark needs the metaworld extra: pip install -e '.[metaworld,ray]'")
    import metaworld  # noqa: F401  (registers Meta-World's own gymnasium ids)
    import ray

    seconds, n, rounds = options.seconds, options.num_envs, options.rounds
    print(f"# {date.today()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
          f"torch {torch.__version__} · gymnasium {gymnasium.__version__} · mujoco {mujoco.__version__} "
          f"· ray {ray.__version__} · numpy {np.__version__}")
    from metarl.envs.ray_workers import LOCAL_RAY_ENVIRONMENT

    ml10, tasks = mixed_ml10_tasks(n)
    # Phase 1, no Ray running (its daemons take CPU): the one-machine engines.
    steppers = {
        "serial": Stepper("serial (today's path)", build_vector_env(ml10, n, engine="serial"), tasks),
        "processes": Stepper("processes, 2 workers",
                             build_vector_env(ml10, n, engine="processes", num_workers=2), tasks),
        "auto": Stepper("auto", build_vector_env(ml10, n), tasks),
        "async": Stepper("Meta-World's own AsyncVectorEnv", gymnasium.make_vec(
            "Meta-World/ML10-train", vector_strategy="async", meta_batch_size=n, seed=0), gymnasium_env=True),
        "sync": Stepper("Meta-World's own SyncVectorEnv", gymnasium.make_vec(
            "Meta-World/ML10-train", vector_strategy="sync", meta_batch_size=n, seed=0), gymnasium_env=True),
    }
    compare("Meta-World ML10, mixed classes", steppers, seconds, rounds, {
        "processes / serial": ("processes", "serial"),
        "processes / Meta-World's AsyncVectorEnv": ("processes", "async"),
    })
    serial_ml10 = statistics.median(steppers["serial"].rates)
    for stepper in steppers.values():
        stepper.close()

    # Phase 2: metarl's local Ray (loopback, no telemetry) with 3 logical CPUs so that the 1- and
    # 2-worker pools coexist; the processes engine again, under the same conditions.
    os.environ.update(LOCAL_RAY_ENVIRONMENT)
    ray.init(address="local", num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False, log_to_driver=False)
    steppers = {
        "processes": Stepper("processes, 2 workers",
                             build_vector_env(ml10, n, engine="processes", num_workers=2), tasks),
        "ray1": Stepper("ray, 1 worker", build_vector_env(ml10, n, engine="ray", num_workers=1), tasks),
        "ray2": Stepper("ray, 2 workers", build_vector_env(ml10, n, engine="ray", num_workers=2), tasks),
        "ray2calls": Stepper("ray, 2 workers, ordinary calls", build_vector_env(
            ml10, n, engine="ray", num_workers=2, ray_compiled_graph=False), tasks),
    }
    compare("Meta-World ML10, mixed classes, with Ray running", steppers, seconds, rounds, {
        "ray 2 workers / processes 2 workers": ("ray2", "processes"),
        "ray 2 workers, ordinary calls / processes": ("ray2calls", "processes"),
    })
    for stepper in steppers.values():
        stepper.close()
    # Whole episodes, as a sampler collects them: Ray's default granularity runs them on the
    # workers (one call per episode and worker), against the processes engine's stepping.
    collectors = {
        "processes": Collector("processes, 2 workers", build_vector_env(
            ml10, n, engine="processes", num_workers=2), tasks),
        "ray2episodes": Collector("ray, 2 workers, episodes on workers", build_vector_env(
            ml10, n, engine="ray", num_workers=2), tasks),
        "ray2steps": Collector("ray, 2 workers, a call per step", build_vector_env(
            ml10, n, engine="ray", num_workers=2, ray_granularity="step"), tasks),
    }
    compare("Meta-World ML10, whole episodes through metarl.rollout.collect, with Ray running",
            collectors, max(seconds, 2.5), rounds, {
                "ray 2 workers, episodes / processes 2 workers": ("ray2episodes", "processes"),
                "ray 2 workers, steps / processes 2 workers": ("ray2steps", "processes"),
            })
    for collector in collectors.values():
        collector.close()

    cheetah = get_family("HalfCheetahVel-MAML")
    cheetah_tasks = TaskSampler(cheetah, 0).sample_train(64)
    steppers = {name: Stepper(label, build_vector_env(cheetah, 64, engine=engine, **extra), cheetah_tasks)
                for name, label, engine, extra in [
                    ("rollout", "rollout (local, 2 threads)", "rollout", {}),
                    ("threads", "threads (local, 2)", "threads", {}),
                    ("serial", "serial", "serial", {}),
                    ("processes", "processes, 2 workers", "processes", {"num_workers": 2}),
                    ("ray1", "ray, 1 worker", "ray", {"num_workers": 1}),
                    ("ray2", "ray, 2 workers", "ray", {"num_workers": 2})]}
    compare("HalfCheetah", steppers, seconds / 2, max(2, rounds // 2), {
        "ray 2 workers / processes 2 workers": ("ray2", "processes")})
    serial_cheetah = statistics.median(steppers["serial"].rates)
    for stepper in steppers.values():
        stepper.close()
    collectors = {name: Collector(label, build_vector_env(cheetah, 64, engine=engine, **extra),
                                  cheetah_tasks)
                  for name, label, engine, extra in [
                      ("rollout", "rollout (local, 2 threads)", "rollout", {}),
                      ("processes", "processes, 2 workers", "processes", {"num_workers": 2}),
                      ("ray2episodes", "ray, 2 workers, episodes on workers", "ray", {"num_workers": 2})]}
    compare("HalfCheetah, whole episodes through metarl.rollout.collect", collectors, seconds / 2,
            max(2, rounds // 2), {
                "ray 2 workers, episodes / processes 2 workers": ("ray2episodes", "processes"),
                "ray 2 workers, episodes / rollout": ("ray2episodes", "rollout")})
    for collector in collectors.values():
        collector.close()

    for compiled in (False, True):
        per_call, per_env = ray_overheads(seconds / 2, compiled)
        if not compiled:
            ordinary_call = per_call
        print(f"Ray's added cost per env step, {'compiled graph' if compiled else 'ordinary calls'}: "
              f"{per_call * 1e6:,.0f} µs a call (one round trip to each worker, in parallel), "
              f"{per_env * 1e6:.2f} µs per sub-env")
    costs = {"ML10": 1 / serial_ml10, "HalfCheetah": 1 / serial_cheetah}
    dims = {"ML10": (39, 4), "HalfCheetah": (20, 6)}
    horizons = {"ML10": 500, "HalfCheetah": 200}
    print("Workers at which one learner's driver saturates, N x sub-env cost / the driver's time "
          "per step:")
    print("  steps (policy + compiled round trip a step) | episodes on workers (the driver follows: "
          "policy a step + an ordinary round trip an episode)")
    for agent, shape in SHAPES.items():
        cells = []
        for family, num_envs in shape.items():
            policy = policy_seconds(*dims[family], num_envs)
            stepped = policy + per_call + per_env * num_envs
            episodes = policy + (ordinary_call + per_env * num_envs) / horizons[family]
            cells.append(f"{family} N={num_envs}: {costs[family] * num_envs / stepped:,.1f} | "
                         f"{costs[family] * num_envs / episodes:,.1f}")
        print(f"  {agent:10s} " + "; ".join(cells))
    ray.shutdown()


if __name__ == "__main__":
    main()
