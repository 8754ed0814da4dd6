"""Environment steps per second, policy in the loop: Gymnasium's vector envs vs ours.

One run measures, for HalfCheetah (``HalfCheetahVel-MAML``) and Ant (``AntVel``):

- the raw single-thread ``mj_step`` loop, no policy (the per-core physics limit);
- ``mujoco.rollout`` (persistent pool, 2 threads) used as the step function, policy in the loop;
- Gymnasium ``SyncVectorEnv`` and ``AsyncVectorEnv`` over the family's Gymnasium id;
- ours: ``MujocoVectorEnv`` with ``engine="serial"`` and ``engine="threads"``;

every row but the first with a 64-64 tanh MLP torch policy (``torch.set_num_threads(1)``)
choosing each batch of actions.  Prints a table and the ratio ours / best Gymnasium.
The machine may be shared: compare rows of one run, as ratios.

    python benchmarks/bench_envs.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from typing import Callable

import gymnasium
import mujoco
import mujoco.rollout
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


def raw_mj_step(xml_file: str, seconds: float) -> float:
    model = load_model(xml_file)
    data = mujoco.MjData(model)
    controls = np.random.default_rng(0).uniform(-1, 1, size=(64, model.nu))

    def step() -> int:
        for control in controls:
            data.ctrl[:] = control
            mujoco.mj_step(model, data, nstep=FRAME_SKIP)
        mujoco.mj_resetData(model, data)
        return len(controls)

    return timed(step, seconds)


def rollout_engine(xml_file: str, num_envs: int, seconds: float) -> float:
    """``mujoco.rollout`` from the batch's state each step; qpos/qvel observations."""
    model = load_model(xml_file)
    datas = [mujoco.MjData(model) for _ in range(2)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state_size = mujoco.mj_stateSize(model, spec)
    initial = np.zeros(state_size)
    mujoco.mj_getState(model, datas[0], initial, spec)
    states = np.tile(initial, (num_envs, 1))
    policy = make_policy(model.nq + model.nv - 1, model.nu)
    output = np.zeros((num_envs, FRAME_SKIP, state_size))
    with mujoco.rollout.Rollout(nthread=2) as runner:

        def step() -> int:
            nonlocal states
            observations = states[:, 2 : 1 + model.nq + model.nv]
            actions = policy(observations).astype(np.float64)[:, None, :]
            runner.rollout(model, datas, states, actions, nstep=FRAME_SKIP, state=output)
            states = output[:, -1].copy()
            return num_envs

        return timed(step, seconds)


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
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"# {date.today()} | {platform.processor() or platform.machine()} | "
        f"python {platform.python_version()} | torch {torch.__version__} | gymnasium "
        f"{gymnasium.__version__} | mujoco {mujoco.__version__} | numpy {np.__version__}"
    )
    print("| robot | engine | num_envs | env steps/s |")
    print("|---|---|---|---|")
    for robot, (family_name, xml_file) in FAMILIES.items():
        rows: list[tuple[str, int, float]] = []

        def record(engine: str, num_envs: int, rate: float) -> None:
            rows.append((engine, num_envs, rate))
            print(f"| {robot} | {engine} | {num_envs} | {rate:,.0f} |", flush=True)

        record("raw mj_step loop, 1 thread, no policy", 1, raw_mj_step(xml_file, args.seconds))
        for num_envs in (8, 32):
            record("Gymnasium SyncVectorEnv", num_envs, gymnasium_vector(family_name, num_envs, False, args.seconds))
        for num_envs in (2, 8):
            record("Gymnasium AsyncVectorEnv", num_envs, gymnasium_vector(family_name, num_envs, True, args.seconds))
        record("mujoco.rollout step, 2 threads (qpos/qvel obs only)", 64, rollout_engine(xml_file, 64, args.seconds))
        record("ours, serial", 32, ours(family_name, 32, "serial", args.seconds))
        for num_envs in (32, 64):
            record("ours, threads (2)", num_envs, ours(family_name, num_envs, "threads", args.seconds))
        best_gym = max(rate for engine, _, rate in rows if engine.startswith("Gymnasium"))
        best_ours = max(rate for engine, _, rate in rows if engine.startswith("ours"))
        print(f"| {robot} | **ours / best Gymnasium** | | **{best_ours / best_gym:.2f}x** |", flush=True)


if __name__ == "__main__":
    main()
