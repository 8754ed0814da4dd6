"""Worker processes each stepping a slice of the batch, arrays in shared memory.

:class:`ProcessVectorEnv` splits ``num_envs`` sub-envs into ``num_workers`` contiguous slices;
worker ``w`` builds its own in-process engine over its slice (``make_slice(size)``, e.g. a serial
:class:`~metarl.envs.engine.MujocoVectorEnv`) and serves commands sent over a pipe.  Actions,
observations, rewards and flags live in shared memory, so a step sends one short message a
worker each way; the reward terms (``infos``) ride on the reply.

Failure is never silent and never hangs the caller: every wait on a worker also watches its
process sentinel and has a time limit (``timeout_s``).  A worker that dies (killed, segfault,
out of memory), raises, or stops answering makes the call raise :class:`MetaRLError` naming the
worker, its slice, the command and the cause (exit signal, the worker's traceback, or the time
limit); the remaining workers are then stopped and the env is closed.

Workers are started with ``fork`` so they inherit the family's kernel factory (including families
registered at run time) without pickling it; they ignore SIGINT (the parent handles Ctrl-C and
closes them) and exit on their own when the parent's end of the pipe closes.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import time
import traceback
from typing import Any, Callable, Sequence

import numpy as np

from metarl.tasks import MetaRLError, Task
from metarl.vector_env import ResetSeeds, VectorTaskEnv, check_actions, check_tasks, merge_infos


DEFAULT_TIMEOUT_S = 300.0
"""Longest wait for one worker's answer to one command before it counts as hung."""


class SharedArrays:
    """Batch arrays in shared memory: ``actions``, ``observations``, ``rewards``, flags."""

    def __init__(self, context: Any, num_envs: int, observation_dim: int, action_dim: int):
        shapes = {
            "actions": ((num_envs, action_dim), np.float64),
            "observations": ((num_envs, observation_dim), np.float32),
            "rewards": ((num_envs,), np.float32),
            "terminated": ((num_envs,), np.bool_),
            "truncated": ((num_envs,), np.bool_),
        }
        self.arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in shapes.items():
            count = int(np.prod(shape))
            buffer = context.RawArray("b", max(1, count * np.dtype(dtype).itemsize))
            self.arrays[name] = np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, sorted (empty where the OS does not say: not Linux)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return []


def worker_cpus(num_workers: int, pin: bool | None = None,
                cpus: Sequence[int] | None = None) -> list[int | None]:
    """The CPU each worker is pinned to (``None``: not pinned).

    ``pin=None`` (auto) pins when the workers cover every CPU this process may run on (then each
    CPU serves ``num_workers / cpus`` of them whatever the scheduler does).  Unpinned, Linux often
    wakes two workers on one core while the other stays idle: measured on 2 cores (ML10, N=20,
    2 workers), ~30% of steps took as long as stepping the whole batch serially; pinned, ~3%.
    With fewer workers than CPUs nothing is pinned, so runs side by side on a bigger machine do
    not pile onto its first cores.
    """
    cpus = allowed_cpus() if cpus is None else list(cpus)
    if not cpus:
        return [None] * num_workers
    if pin is None:
        pin = len(cpus) > 1 and num_workers >= len(cpus)
    if not pin:
        return [None] * num_workers
    return [cpus[index % len(cpus)] for index in range(num_workers)]


SPIN_S = 0.001
"""How long a worker that has a core to itself polls for its next command before it blocks:
the driver's policy call between two steps (~0.2 ms) fits, and the worker answers without a
wake-up (on 2 cores, ML10 N=20: 3.84 ms a step against 4.04 blocking; steps slower than 5 ms
0.6% instead of 4%).  It yields its core at every poll, so the driver runs whenever it needs to."""


def _next_command(connection, spin_s: float) -> tuple[str, Any]:
    if spin_s > 0 and not connection.poll(0):
        deadline = time.perf_counter() + spin_s
        while not connection.poll(0) and time.perf_counter() < deadline:
            os.sched_yield()
    return connection.recv()


def _serve(connection, make_slice, size: int, start: int, shared: SharedArrays,
           cpu: int | None = None, spin_s: float = 0.0) -> None:
    """A worker's loop: build its slice's engine, then answer commands until ``close``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    stop = start + size
    env = None
    try:
        env = make_slice(size)
        connection.send(("ok", None))
        while True:
            try:
                command, payload = _next_command(connection, spin_s)
            except EOFError:  # the parent is gone
                return
            if command == "step":
                observations, rewards, terminated, truncated, infos = env.step(
                    shared["actions"][start:stop]
                )
                shared["observations"][start:stop] = observations
                shared["rewards"][start:stop] = rewards
                shared["terminated"][start:stop] = terminated
                shared["truncated"][start:stop] = truncated
                connection.send(("ok", infos))
            elif command == "reset":
                shared["observations"][start:stop] = env.reset(seed=payload + start)
                connection.send(("ok", None))
            elif command == "set_tasks":
                env.set_tasks(payload)
                connection.send(("ok", None))
            elif command == "close":
                env.close()
                connection.send(("ok", None))
                return
            else:
                raise MetaRLError(f"unknown worker command {command!r}")
    except Exception:
        try:
            connection.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass


class ProcessVectorEnv:
    """``num_envs`` sub-envs on ``num_workers`` worker processes; see the module docstring.

    ``make_slice(size)`` builds a :class:`~metarl.vector_env.VectorTaskEnv` over ``size``
    sub-envs whose ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i`` (as every engine here
    does), so the process engine gives the same numbers as the in-process one.
    """

    def __init__(
        self,
        make_slice: Callable[[int], VectorTaskEnv],
        num_envs: int,
        *,
        num_workers: int = 2,
        seed: int = 0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        pin_workers: bool | None = None,
    ) -> None:
        if num_workers < 1:
            raise MetaRLError(f"num_workers must be at least 1; got {num_workers}")
        if "fork" not in mp.get_all_start_methods():
            raise MetaRLError("engine 'processes' needs the fork start method; use 'threads'")
        self.num_envs = num_envs
        self.timeout_s = timeout_s
        self._reset_seeds = ResetSeeds(seed)
        self._closed = False
        probe = make_slice(1)  # dimensions and bounds, from one sub-env in this process
        self.observation_dim, self.action_dim = probe.observation_dim, probe.action_dim
        self.action_low, self.action_high = probe.action_low.copy(), probe.action_high.copy()
        self.max_episode_steps = probe.max_episode_steps
        probe.close()
        context = mp.get_context("fork")
        self._shared = SharedArrays(context, num_envs, self.observation_dim, self.action_dim)
        bounds = np.linspace(0, num_envs, min(num_workers, num_envs) + 1).astype(int)
        self.slices = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        cpus = allowed_cpus()
        self.cpus = worker_cpus(len(self.slices), pin_workers, cpus)
        spin_s = SPIN_S if len(self.slices) <= (len(cpus) or os.cpu_count() or 1) else 0.0
        self._connections = []
        self._processes = []
        for index, (start, stop) in enumerate(self.slices):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_serve,
                args=(child_end, make_slice, stop - start, start, self._shared, self.cpus[index], spin_s),
                name=f"metarl-engine-worker-{index}", daemon=True,
            )
            process.start()
            child_end.close()
            self._connections.append(parent_end)
            self._processes.append(process)
        self._gather("start")

    # ------------------------------------------------------------------ messaging
    def _describe(self, index: int) -> str:
        start, stop = self.slices[index]
        pid = self._processes[index].pid
        cpu = "" if self.cpus[index] is None else f", cpu {self.cpus[index]}"
        return f"engine worker {index} (pid {pid}{cpu}, sub-envs {start}..{stop - 1})"

    def _fail(self, message: str) -> MetaRLError:
        self._terminate(grace_s=0.0)
        return MetaRLError(message + "; the vector env is closed, build a new one to go on")

    def _receive(self, index: int, command: str) -> Any:
        connection, process = self._connections[index], self._processes[index]
        ready = mp.connection.wait([connection, process.sentinel], timeout=self.timeout_s)
        if connection in ready:
            try:
                status, payload = connection.recv()
            except (EOFError, OSError):
                status, payload = "died", None
        elif ready:
            status, payload = "died", None
        else:
            raise self._fail(
                f"{self._describe(index)} did not answer {command!r} within {self.timeout_s:g} s"
            )
        if status == "ok":
            return payload
        if status == "error":
            raise self._fail(f"{self._describe(index)} failed during {command!r}:\n{payload}")
        process.join(timeout=1.0)
        code = process.exitcode
        if code is not None and code < 0:
            cause = f"was killed by {signal.Signals(-code).name}"
        else:
            cause = f"exited with code {code}"
        raise self._fail(f"{self._describe(index)} {cause} during {command!r}")

    def _send(self, index: int, command: str, payload: Any = None) -> None:
        try:
            self._connections[index].send((command, payload))
        except (BrokenPipeError, OSError):
            self._receive(index, command)  # reports the dead worker
            raise  # pragma: no cover - _receive always raises for a dead worker

    def _gather(self, command: str, payloads: Sequence[Any] | None = None) -> list[Any]:
        if self._closed:
            raise MetaRLError(f"{command!r} on a closed vector env")
        if command != "start":
            for index in range(len(self.slices)):
                self._send(index, command, None if payloads is None else payloads[index])
        return [self._receive(index, command) for index in range(len(self.slices))]

    # ------------------------------------------------------------------ VectorTaskEnv
    def set_tasks(self, tasks: Sequence[Task]) -> None:
        check_tasks(self, tasks)
        self._gather("set_tasks", [list(tasks[start:stop]) for start, stop in self.slices])

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        base = self._reset_seeds.next(seed)
        self._gather("reset", [base] * len(self.slices))
        return self._shared["observations"].copy()

    def step(self, actions: np.ndarray):
        actions = check_actions(self, actions)
        self._shared["actions"][:] = actions
        infos = merge_infos(self._gather("step"))
        return (
            self._shared["observations"].copy(),
            self._shared["rewards"].copy(),
            self._shared["terminated"].copy(),
            self._shared["truncated"].copy(),
            infos,
        )

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._gather("close")
        except MetaRLError:
            pass  # already reported; _fail stopped the workers
        self._terminate(grace_s=5.0)

    def _terminate(self, *, grace_s: float) -> None:
        """Mark closed; give the workers ``grace_s`` to exit, then kill what is left."""
        self._closed = True
        for process in self._processes:
            process.join(timeout=grace_s)
            if process.is_alive():
                process.kill()
                process.join(timeout=5.0)
        for connection in self._connections:
            connection.close()
