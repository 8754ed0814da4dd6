"""Rollout workers on Ray: a vector env whose sub-envs step on Ray actors, anywhere in a cluster.

:class:`RayVectorEnv` splits ``num_envs`` sub-envs into contiguous slices, one per actor of a
:class:`WorkerPool`; each actor builds its slice with the family's best in-process engine.
The learner stays in the driver (on its GPU when there is one); every agent runs on Ray with
no code of its own.

Granularity (``env_options.ray_granularity``).  ``"episode"`` (default): a collection
(:func:`metarl.rollout.collect`) sends each actor a CPU copy of the acting policy
(:func:`portable_copy`) and the actor runs its slice's whole episode
(:class:`metarl.rollout.SliceRollout`): one call per episode and worker; the driver then
follows the episode with its own actor (:func:`metarl.rollout.follow`), so the actor's state
ends where a local collection leaves it.  ``"step"``: one call per env step and worker, with
the batch's actions, as any caller of ``step`` gets anyway.  Steps go through a Ray *compiled
graph* over the pool's actors (``ray.dag``: shared-memory channels instead of a task submission
per call), other commands through ordinary actor calls.  Its readers poll (each actor keeps its
core busy while it waits for the next step), so the graph lives for one rollout: compiled at
``reset`` (~0.13 s), torn down once every sub-env's episode has ended, before the learner's
update needs the cores; and it is used only where it pays (:func:`compile_pays`).  Measured on
2 cores (benchmarks/RESULTS.md): an ordinary round trip costs ~1.5-2 ms, about two Meta-World
steps; the compiled graph's ~0.4 ms on one node (~1.4 ms to another node) when the driver has a
core of its own; ML10 with 20 sub-envs on 2 workers: episodes 1.07x the processes engine,
per-step calls 0.68x.  Where the graph cannot be compiled, steps fall back to ordinary calls
(one line on stderr).

Faults: the driver logs, per slice, what made its state (tasks, the reset seed, the actions
since the reset).  When an actor dies (``kill -9``, its node stopped), its slices are rebuilt
on a new actor and the log is replayed, so the batch continues with identical numbers (the
engines are deterministic for a seed); if no new actor can be placed within
``restart_timeout_s``, or a slice keeps dying, the call raises a one-line
:class:`~metarl.tasks.MetaRLError` instead (the run stops; its last checkpoint is intact).  An
actor that does not answer within ``timeout_s`` and an exception in the env are errors too:
never a hang, never a silently shorter batch.  A failed compiled step cannot tell which live
actors stepped before the failure, so every slice of the env is rebuilt from its log (the
state before the step) and the step redone with ordinary calls.  An actor that dies during an
episode call is replaced and the episode run again from the same copy of the policy.

Starting Ray: ``address=None`` starts a local Ray with this machine's cores, bound to 127.0.0.1
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, without which Ray binds the machine's network
address), usage statistics off, no dashboard, Ray's token authentication left on;
``"auto"`` or ``"HOST:PORT"`` joins a running cluster (``ray start --head`` / ``--address``).
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from metarl.tasks import MetaRLError, Task, TaskFamily
from metarl.vector_env import ResetSeeds, VectorTaskEnv, check_actions, check_tasks, merge_infos

ray: Any = None
"""The ``ray`` module, imported on first use (see :func:`require_ray`)."""

DEFAULT_TIMEOUT_S = 300.0
"""Longest wait for one actor's answer to one command before it counts as hung."""
DEFAULT_RESTART_TIMEOUT_S = 60.0
"""Longest wait for a replacement actor to be placed and started after one died."""
COMPILE_MIN_EPISODE_STEPS = 200
"""Compiling the graph costs ~0.13 s a rollout and saves ~1.2 ms a step (2 cores): below this
many steps an episode, ordinary calls are as fast (the tests' 2D navigation, 100 steps, ran
2x slower compiled)."""


def compile_pays(episode_steps: int, spare_driver_cpus: float) -> bool:
    """Whether steps go through the compiled graph when ``env_options.ray_compiled_graph`` is
    unset: episodes of :data:`COMPILE_MIN_EPISODE_STEPS` steps or more, and a CPU on the
    driver's node that no actor of the pool holds.  The graph's readers poll; with every core
    of the driver's node taken by an actor, the polling driver slows that actor as much as the
    graph saves (ML10, N = 20, 2 workers on 2 cores: 0.62x the processes engine either way),
    while with a core to itself (1 worker) the graph steps 1.12x faster than ordinary calls."""
    return episode_steps >= COMPILE_MIN_EPISODE_STEPS and spare_driver_cpus >= 1.0


GRANULARITIES = ("episode", "step")
"""``env_options.ray_granularity``: what one call to a worker does (see the module docstring)."""


def check_granularity(granularity: str) -> None:
    """A one-line error for an ``env_options.ray_granularity`` that is not one of
    :data:`GRANULARITIES`."""
    if granularity not in GRANULARITIES:
        raise MetaRLError(f"env_options.ray_granularity must be {' or '.join(GRANULARITIES)} "
                          f"(unset: {GRANULARITIES[0]}); got {granularity!r}")

MAX_RESTARTS_PER_CALL = 3
"""A slice that dies this many times in one call is a failure, not bad luck (e.g. a crash
that the replay reproduces)."""


def available() -> bool:
    """Whether the ``ray`` extra is installed."""
    return importlib.util.find_spec("ray") is not None


def require_ray() -> None:
    """Import Ray (late, so that a local start can set Ray's environment before its import)."""
    global ray
    if ray is not None:
        return
    if not available():
        raise MetaRLError(
            "engine 'ray' needs the optional extra: pip install -e '.[ray]' (or pip install 'metarl[ray]')"
        )
    import ray as ray_module
    import ray.exceptions  # noqa: F401

    ray = ray_module


LOCAL_RAY_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                         "RAY_worker_niceness": "0"}
"""A local Ray started by metarl: no usage statistics, every address on 127.0.0.1 (Ray
otherwise binds the machine's network address, even with ``_node_ip_address="127.0.0.1"``),
and its workers at the driver's priority: Ray's default (nice 15) hands their core to the
driver whenever it polls the compiled graph's channels, which halved ML10's steps on 2 cores."""


def connect(address: str | None = None) -> None:
    """Join Ray: the running session if there is one, else a new local Ray on 127.0.0.1
    (``address=None``), else the cluster at ``address`` (``"auto"`` or ``"HOST:PORT"``)."""
    if ray is None and address is None:
        os.environ.update(LOCAL_RAY_ENVIRONMENT)  # before Ray's import reads it
    require_ray()
    if ray.is_initialized():
        return
    if address is None:
        os.environ.update(LOCAL_RAY_ENVIRONMENT)  # for the processes Ray starts
        from ray._private import ray_constants

        # Ray read the variable when it was first imported (perhaps by the caller, before this);
        # the driver's own address choice reads this flag.
        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                 _node_ip_address="127.0.0.1",
                 configure_logging=False, log_to_driver=False)
    else:
        try:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
        except ConnectionError as error:
            raise MetaRLError(
                f"cannot join the Ray cluster at env_options.ray_address={address!r}: {error}; "
                "start it with 'ray start --head' (accepted: unset for a local Ray, 'auto', HOST:PORT)"
            ) from None


def slice_options(family: TaskFamily, options: dict[str, Any], cpus_per_worker: float) -> dict[str, Any]:
    """Family options for an actor's slice: its stepping threads default to the actor's CPUs."""
    try:
        takes_threads = "num_threads" in inspect.signature(family.make_vector_env).parameters
    except (TypeError, ValueError):
        takes_threads = False
    if takes_threads and "num_threads" not in options:
        return {**options, "num_threads": max(1, int(cpus_per_worker))}
    return dict(options)


class SliceWorker:
    """A Ray actor's state: the slices it steps, by the key of their vector env."""

    def __init__(self) -> None:
        # The compiled graph's loop imports torch on its own thread; imported here first, a
        # slice built meanwhile (SciPy checks ``sys.modules["torch"]``) never sees it half done.
        importlib.import_module("torch")

        self.envs: dict[str, VectorTaskEnv] = {}
        self.rollouts: dict[str, Any] = {}
        """The episode each slice ran last (:class:`metarl.rollout.SliceRollout`), by key."""

    def where(self) -> tuple[int, str]:
        import ray as ray_module  # in the actor's process

        return os.getpid(), ray_module.get_runtime_context().get_node_id()

    def build(self, key: str, make_slice: Callable[[int], VectorTaskEnv], size: int):
        self.close(key)  # a slice rebuilt from its log replaces the old one
        env = self.envs[key] = make_slice(size)
        return (env.observation_dim, env.action_dim, env.action_low, env.action_high,
                env.max_episode_steps)

    def set_tasks(self, key: str, tasks: Sequence[Task]) -> None:
        self.envs[key].set_tasks(tasks)

    def reset(self, key: str, seed: int) -> np.ndarray:
        return self.envs[key].reset(seed=seed)

    def step(self, key: str, actions: np.ndarray):
        return self.envs[key].step(actions)

    def graph_step(self, key: str, actions: np.ndarray | None):
        """The compiled graph's step: every actor of the pool takes part, ``None`` for an actor
        with no slice in the env ``key``."""
        return None if actions is None else self.envs[key].step(actions)

    def episode(self, key: str, actor: bytes, seed: int, start: int, num_envs: int,
                to_env_units: Callable[[np.ndarray], np.ndarray] | None, until: int | None):
        """Reset the slice with ``seed`` and run one episode of ``actor`` (a copy of the
        driver's, :func:`portable_copy`) in it, to its end or to step ``until``: ``(rows,
        steps)``, see :class:`metarl.rollout.SliceRollout`."""
        import pickle

        from metarl.rollout import SliceRollout, torch_threads

        with torch_threads(1):  # as the driver's collection (the same kernels)
            rollout = SliceRollout(self.envs[key], pickle.loads(actor), start=start,
                                   num_envs=num_envs, reset_seed=seed, to_env_units=to_env_units)
            self.rollouts[key] = rollout
            rows = rollout.run(until)
        return rows, rollout.record.num_steps

    def extend(self, key: str, until: int, steps: int, *episode: Any):
        """Step the slice's episode on to step ``until`` (other slices' episodes went on longer);
        an actor that did not run it (a replacement) first reruns it to ``steps``, where the
        dead one had stopped, from ``episode`` (the arguments of :meth:`episode` but ``until``)."""
        from metarl.rollout import torch_threads

        if key not in self.rollouts:
            self.episode(key, *episode, steps)
        rollout = self.rollouts[key]
        with torch_threads(1):
            rows = rollout.run(until)
        return rows, rollout.record.num_steps

    def replay(self, key: str, seed: int | None, actions: Sequence[np.ndarray]) -> None:
        """Reset with ``seed`` and step through ``actions`` (rebuilding a lost slice's state)."""
        if seed is None:
            return
        env = self.envs[key]
        env.reset(seed=seed)
        for step_actions in actions:
            env.step(step_actions)

    def close(self, key: str) -> None:
        self.rollouts.pop(key, None)
        env = self.envs.pop(key, None)
        if env is not None:
            env.close()


class WorkerPool:
    """``size`` actors with ``cpus_per_worker`` CPUs each, spread over the cluster's nodes and
    shared by every :class:`RayVectorEnv` of this process that asks for the same shape (a run's
    training and evaluation envs), so a run never asks Ray for more CPUs than it has."""

    _pools: dict[tuple[Any, ...], "WorkerPool"] = {}

    def __init__(self, size: int, cpus_per_worker: float, start_timeout_s: float) -> None:
        self.size = size
        self.cpus_per_worker = cpus_per_worker
        self._actor_class = ray.remote(SliceWorker)
        self.actors = [self._start() for _ in range(size)]
        self.generations = [0] * size
        self.users = 0
        """Open vector envs on this pool; the last one to close stops its actors."""
        self.places = [self._place(index, "starting", start_timeout_s) for index in range(size)]
        self._graph: Any = None
        self.compiled = True
        """Whether a compiled graph can be used (off after one failed to compile)."""

    def graph(self) -> Any:
        """The compiled step graph over the current actors (compiled if there is none): inputs
        ``(key, actions_0, ..., actions_{size-1})``, one output per actor; ``None`` when Ray
        cannot compile it (steps then use ordinary calls).  Call it only right after every actor
        answered (compiling waits for each of them)."""
        if self._graph is None and self.compiled:
            from ray.dag import InputNode, MultiOutputNode

            try:
                with InputNode() as inputs:
                    dag = MultiOutputNode([actor.graph_step.bind(inputs[0], inputs[index + 1])
                                           for index, actor in enumerate(self.actors)])
                self._graph = dag.experimental_compile()
            except Exception as error:  # an old Ray, or a cluster whose channels do not work
                self.compiled = False
                print(f"metarl: ray workers step through ordinary actor calls (a compiled graph "
                      f"failed: {_first_line(error)})", file=sys.stderr)
        return self._graph

    def cpus_on_driver_node(self) -> float:
        """CPUs this pool's actors hold on the driver's node."""
        node = ray.get_runtime_context().get_node_id()
        return sum(self.cpus_per_worker for _, where in self.places if where == node)

    @staticmethod
    def driver_node_cpus() -> float:
        """The driver's node's CPUs, as Ray counts them."""
        node = ray.get_runtime_context().get_node_id()
        for info in ray.nodes():
            if info.get("NodeID") == node and info.get("Alive"):
                return float(info.get("Resources", {}).get("CPU", 0.0))
        return 0.0

    def current_graph(self) -> Any:
        """The compiled graph if there is one now (never compiles)."""
        return self._graph

    def drop_graph(self) -> None:
        """Tear the compiled graph down (before the actors change, or after it failed)."""
        graph, self._graph = self._graph, None
        if graph is not None:
            try:
                graph.teardown()
            except Exception:  # its actors are dead already
                pass

    @classmethod
    def get(cls, *, address: str | None, num_workers: int | None, cpus_per_worker: float,
            start_timeout_s: float) -> "WorkerPool":
        connect(address)
        if num_workers is None:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            num_workers = max(1, int(cpus // cpus_per_worker))
        key = (ray.get_runtime_context().get_job_id(), num_workers, cpus_per_worker)
        if key not in cls._pools:
            cls._pools[key] = cls(num_workers, cpus_per_worker, start_timeout_s)
        pool = cls._pools[key]
        pool.users += 1
        return pool

    def release(self, *, failed: bool = False) -> None:
        """One user fewer; with none left, stop the actors (their CPUs go back to the cluster).
        ``failed``: an actor may be hung, so kill them before tearing the graph down (its
        teardown would wait for a stopped actor; after a healthy run it goes first, quietly)."""
        self.users -= 1
        if self.users > 0:
            return
        for key, pool in list(self._pools.items()):
            if pool is self:
                del self._pools[key]
        if not failed:
            self.drop_graph()
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node
                pass
        self.drop_graph()

    def _start(self):
        return self._actor_class.options(
            num_cpus=self.cpus_per_worker, scheduling_strategy="SPREAD", max_restarts=0,
        ).remote()

    def _place(self, index: int, why: str, timeout_s: float) -> tuple[int, str]:
        """Wait for actor ``index`` to run; its ``(pid, node id)``."""
        try:
            return ray.get(self.actors[index].where.remote(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            cpus = ray.available_resources().get("CPU", 0.0)
            ray.kill(self.actors[index], no_restart=True)
            raise MetaRLError(
                f"ray worker {index} could not be placed within {timeout_s:g} s "
                f"({why}; it needs {self.cpus_per_worker:g} CPU, the cluster has {cpus:g} free): "
                "lower env_options.num_workers or add nodes"
            ) from None

    def describe(self, index: int) -> str:
        pid, node = self.places[index]
        return f"ray worker {index} (pid {pid}, node {node[:8]})"

    def replace(self, index: int, cause: str, timeout_s: float) -> None:
        """Start a new actor in place of the dead actor ``index`` (placed within ``timeout_s``)."""
        self.drop_graph()
        try:
            ray.kill(self.actors[index], no_restart=True)
        except Exception:  # already gone with its node
            pass
        self.actors[index] = self._start()
        self.generations[index] += 1
        self.places[index] = self._place(index, f"replacing a worker that {cause}", timeout_s)

    @classmethod
    def shutdown_all(cls) -> None:
        """Forget every pool (their actors die with the Ray session); for tests."""
        cls._pools.clear()


_ENV_KEYS = itertools.count()


class RayVectorEnv:
    """``num_envs`` sub-envs on the actors of a :class:`WorkerPool`; see the module docstring.

    ``make_slice(size)`` builds a :class:`~metarl.vector_env.VectorTaskEnv` over ``size``
    sub-envs whose ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i`` (every engine here
    does), so the batch gives the same numbers as the same engine in one process.
    """

    def __init__(self, make_slice: Callable[[int], VectorTaskEnv], num_envs: int, *, seed: int = 0,
                 num_workers: int | None = None, cpus_per_worker: float = 1.0,
                 address: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 restart_timeout_s: float | None = None, compiled_graph: bool | None = None,
                 granularity: str = "episode") -> None:
        require_ray()
        check_granularity(granularity)
        self.granularity = granularity
        """``"episode"``: :meth:`collect_remote` runs whole episodes on the workers;
        ``"step"``: one call per env step (the only way for a caller stepping the env itself)."""
        if cpus_per_worker <= 0:
            raise MetaRLError(f"env_options.ray_cpus_per_worker must be positive; got {cpus_per_worker}")
        self.restart_timeout_s = (DEFAULT_RESTART_TIMEOUT_S if restart_timeout_s is None
                                  else float(restart_timeout_s))
        self.pool = WorkerPool.get(address=address, num_workers=num_workers,
                                   cpus_per_worker=cpus_per_worker,
                                   # a first start waits at least the default (a loaded
                                   # machine takes seconds to start a worker process)
                                   start_timeout_s=max(self.restart_timeout_s,
                                                       DEFAULT_RESTART_TIMEOUT_S))
        self.num_envs = num_envs
        self.timeout_s = timeout_s
        self._make_slice = make_slice
        self._key = f"{os.getpid()}-{next(_ENV_KEYS)}"
        self._reset_seeds = ResetSeeds(seed)
        bounds = np.linspace(0, num_envs, min(self.pool.size, num_envs) + 1).astype(int)
        self.slices = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        # What made each slice's state, replayed onto a replacement actor.
        self._tasks: list[list[Task] | None] = [None] * len(self.slices)
        self._reset_seed: int | None = None
        self._actions: list[np.ndarray] = []
        self._done = np.zeros(num_envs, dtype=bool)
        """Sub-envs whose episode ended since the reset; all ended: the compiled graph goes."""
        self._generations = [-1] * len(self.slices)
        self._closed = False
        self.restarts = 0
        """Actors replaced during this env's life (each one logged on stderr)."""
        specs = self._gather("build", [() for _ in self.slices])
        (self.observation_dim, self.action_dim, low, high, self.max_episode_steps) = specs[0]
        self.action_low, self.action_high = np.asarray(low).copy(), np.asarray(high).copy()
        if compiled_graph is None:
            spare = self.pool.driver_node_cpus() - self.pool.cpus_on_driver_node()
            compiled_graph = compile_pays(self.max_episode_steps, spare)
        self.compiled_graph = bool(compiled_graph)
        """Whether this env's rollouts step through the compiled graph (unset: see
        :func:`compile_pays`)."""

    # ------------------------------------------------------------------ messaging
    def _call(self, index: int, command: str, args: tuple) -> Any:
        actor = self.pool.actors[index]
        start, stop = self.slices[index]
        if command == "build":
            return actor.build.remote(self._key, self._make_slice, stop - start)
        return getattr(actor, command).remote(self._key, *args)

    def _rebuild(self, index: int) -> None:
        """Recreate slice ``index`` on the pool's current actor and replay its log."""
        start, stop = self.slices[index]
        actor = self.pool.actors[index]
        refs = [actor.build.remote(self._key, self._make_slice, stop - start)]
        if self._tasks[index] is not None:
            refs.append(actor.set_tasks.remote(self._key, self._tasks[index]))
        seed = None if self._reset_seed is None else self._reset_seed + start
        refs.append(actor.replay.remote(self._key, seed, [a[start:stop] for a in self._actions]))
        try:
            ray.get(refs, timeout=self.timeout_s)
        except ray.exceptions.RayError as error:
            raise self._fail(f"{self.pool.describe(index)} could not rebuild its slice: "
                             f"{_first_line(error)}") from None
        self._generations[index] = self.pool.generations[index]

    def _sync_generations(self) -> None:
        """Rebuild the slices whose actor another env of this run replaced already."""
        for index in range(len(self.slices)):
            if self._generations[index] != self.pool.generations[index]:
                self._rebuild(index)

    def _fail(self, message: str) -> MetaRLError:
        if not self._closed:
            self._closed = True
            self.pool.release(failed=True)
        return MetaRLError(message + "; the vector env is closed, build a new one to go on")

    def _gather(self, command: str, args: Sequence[tuple]) -> list[Any]:
        if self._closed:
            raise MetaRLError(f"{command!r} on a closed vector env")
        if command != "build":
            self._sync_generations()
        refs = {index: self._call(index, command, args[index]) for index in range(len(self.slices))}
        values = list(refs.values())
        try:  # one wait for every worker: the common case
            results = ray.get(values, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            _, pending = ray.wait(values, num_returns=len(values), timeout=0)
            index = next(index for index, ref in refs.items() if ref in pending)
            raise self._fail(f"{self.pool.describe(index)} did not answer {command!r} "
                             f"within {self.timeout_s:g} s") from None
        except ray.exceptions.RayError:  # find the failed slices, recover or report them
            results = [self._result(index, ref, command, args[index]) for index, ref in refs.items()]
        if command == "build":
            self._generations = list(self.pool.generations[: len(self.slices)])
        return results

    def _result(self, index: int, ref: Any, command: str, args: tuple) -> Any:
        """Slice ``index``'s answer to ``command``; a dead actor is replaced and the command
        redone on its replayed slice (at most :data:`MAX_RESTARTS_PER_CALL` times)."""
        for attempt in itertools.count():
            try:
                return ray.get(ref, timeout=self.timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise self._fail(f"{self.pool.describe(index)} did not answer {command!r} "
                                 f"within {self.timeout_s:g} s") from None
            except ray.exceptions.RayTaskError as error:  # the env itself raised
                cause = str(error.cause) if error.cause is not None else str(error)
                raise self._fail(f"{self.pool.describe(index)} failed during {command!r}: "
                                 f"{type(error.cause).__name__}: {cause}") from None
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as error:
                if attempt >= MAX_RESTARTS_PER_CALL:
                    raise self._fail(f"{self.pool.describe(index)} died {attempt + 1} times during "
                                     f"{command!r} ({_death_cause(error)})") from None
                self._recover(index, command, f"died ({_death_cause(error)})")
                ref = self._call(index, command, args)

    def _graph_step(self, per_slice: list[np.ndarray]) -> list[Any] | None:
        """The step's replies through the pool's compiled graph; ``None`` when there is none, or
        when it failed (a dead actor: then the dead are replaced, every slice is rebuilt from its
        log and the caller redoes the step with ordinary calls)."""
        if self._closed:
            raise MetaRLError("'step' on a closed vector env")
        graph = self.pool.current_graph() if self.compiled_graph else None
        if graph is None:
            return None
        self._sync_generations()
        inputs = per_slice + [None] * (self.pool.size - len(per_slice))
        replies = []
        try:
            refs = graph.execute(self._key, *inputs)
            for index, ref in enumerate(refs):
                try:
                    reply = ray.get(ref, timeout=self.timeout_s)
                except ray.exceptions.RayChannelTimeoutError:
                    raise self._fail(f"{self.pool.describe(index)} did not answer 'step' "
                                     f"within {self.timeout_s:g} s") from None
                except ray.exceptions.RayTaskError as error:  # the env itself raised
                    cause = error.cause if error.cause is not None else error
                    raise self._fail(f"{self.pool.describe(index)} failed during 'step': "
                                     f"{type(cause).__name__}: {cause}") from None
                if index < len(self.slices):
                    replies.append(reply)
            return replies
        except MetaRLError:
            self.pool.drop_graph()
            raise
        except (ray.exceptions.RayError, OSError) as error:  # a channel closed: an actor died
            self.pool.drop_graph()
            self._after_graph_failure(error)
            return None

    def _after_graph_failure(self, error: Exception) -> None:
        """Replace the dead actors and rebuild every slice from its log (the live ones may or may
        not have stepped)."""
        for index in range(len(self.slices)):
            try:
                ray.get(self.pool.actors[index].where.remote(), timeout=self.timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as death:
                self._recover(index, "step", f"died ({_death_cause(death)})")
            except ray.exceptions.GetTimeoutError:
                raise self._fail(f"{self.pool.describe(index)} did not answer after a failed step "
                                 f"within {self.timeout_s:g} s ({type(error).__name__})") from None
            else:
                self._rebuild(index)

    def _recover(self, index: int, command: str, cause: str) -> None:
        """Replace the dead actor ``index`` and replay this env's slice on the new one."""
        dead, started = self.pool.describe(index), time.monotonic()
        self.pool.replace(index, cause, self.restart_timeout_s)
        self.restarts += 1
        self._rebuild(index)
        done = (f"rebuilt its slice on {self.pool.describe(index)} in "
                f"{time.monotonic() - started:.2f} s")
        if command in ("episode", "extend"):
            done += ", to run the episode again"
        else:
            done = done.replace("rebuilt its slice", f"replayed its {len(self._actions)} steps")
        print(f"metarl: {dead} {cause} during {command!r}; {done}", file=sys.stderr)

    # ------------------------------------------------------------------ VectorTaskEnv
    def set_tasks(self, tasks: Sequence[Task]) -> None:
        check_tasks(self, tasks)
        per_slice = [list(tasks[start:stop]) for start, stop in self.slices]
        self._gather("set_tasks", [(chunk,) for chunk in per_slice])
        self._tasks = per_slice
        self._reset_seed, self._actions = None, []

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        base = self._reset_seeds.next(seed)
        observations = self._gather("reset", [(base + start,) for start, _ in self.slices])
        self._reset_seed, self._actions = base, []
        self._done = np.zeros(self.num_envs, dtype=bool)
        if self.compiled_graph:
            self.pool.graph()  # for this rollout's steps (the actors have just answered)
        return np.concatenate(observations).astype(np.float32)

    def step(self, actions: np.ndarray):
        actions = np.asarray(check_actions(self, actions), dtype=np.float64).copy()
        per_slice = [actions[start:stop] for start, stop in self.slices]
        replies = self._graph_step(per_slice)
        if replies is None:  # no compiled graph, or it failed and the slices were rebuilt
            replies = self._gather("step", [(chunk,) for chunk in per_slice])
        self._actions.append(actions)
        observations, rewards, terminated, truncated, infos = zip(*replies)
        terminated, truncated = np.concatenate(terminated), np.concatenate(truncated)
        self._done |= terminated | truncated
        if self._done.all():  # the rollout is over: idle actors must not poll their channels
            self.pool.drop_graph()
        return (np.concatenate(observations).astype(np.float32),
                np.concatenate(rewards).astype(np.float32), terminated, truncated,
                merge_infos(infos))

    def collect_remote(self, actor: Any, *, reset_seed: int | None = None,
                       to_env_units: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
        """One episode of ``actor`` in every sub-env, run on the workers: each gets a copy of
        the actor (:func:`portable_copy`) and runs its slice's episode
        (:class:`metarl.rollout.SliceRollout`) in one call; slices whose episodes ended before
        the others' are then stepped on to the batch's last step, as a local collection steps
        them.  Returns the batch's :class:`metarl.rollout.Record` (the caller follows it with
        its own actor), or ``None`` with ``granularity="step"`` or an actor that cannot be
        copied (the caller then steps the env itself)."""
        from metarl.rollout import Record

        if self.granularity != "episode":
            return None
        copy = portable_copy(actor)
        if copy is None:
            return None
        base = self._reset_seeds.next(reset_seed)
        self._reset_seed, self._actions = None, []  # each episode call resets its slice
        copy = ray.put(copy)  # once in the object store, however many workers read it
        episodes = [(copy, base + start, start, self.num_envs, to_env_units)
                    for start, _ in self.slices]
        replies = self._gather("episode", [(*episode, None) for episode in episodes])
        chunks = [[rows] for rows, _ in replies]
        steps = [count for _, count in replies]
        num_steps = max(steps)
        if min(steps) < num_steps:
            more = self._gather("extend", [(num_steps, count, *episode)
                                           for episode, count in zip(episodes, steps)])
            for chunk, (rows, _) in zip(chunks, more):
                chunk.append(rows)
        record = Record.from_slices(chunks, num_steps)
        self._reset_seed = base  # the log a replacement actor replays: the actions sent
        self._actions = list(record.actions if to_env_units is None
                             else to_env_units(record.actions))
        return record

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        refs = [self.pool.actors[index].close.remote(self._key) for index in range(len(self.slices))]
        try:
            ray.get(refs, timeout=10.0)
        except Exception:  # a dead actor has nothing left to close
            pass
        self.pool.release()


_UNCOPYABLE: set[str] = set()
"""Actor classes already reported as not copyable to the workers (one line each per process)."""


def portable_copy(actor: Any) -> bytes | None:
    """``actor`` pickled for a worker: its tensors detached and on the CPU, its devices the
    CPU (a learner on a GPU acts on the workers' CPUs); ``None``, with one line on stderr, when
    it cannot be copied (a GPU generator, an open file): its episodes then step per call."""
    import io

    from ray import cloudpickle
    import torch

    class CpuPickler(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, torch.nn.Parameter):
                return torch.nn.Parameter, (obj.detach().cpu(), obj.requires_grad)
            if isinstance(obj, torch.Tensor):
                return obj.detach().cpu().__reduce_ex__(cloudpickle.DEFAULT_PROTOCOL)
            if isinstance(obj, torch.device) and obj.type != "cpu":
                return torch.device, ("cpu",)
            if isinstance(obj, torch.Generator) and obj.device.type != "cpu":
                raise TypeError(f"a random generator on {obj.device} cannot act on a worker's CPU")
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    try:
        CpuPickler(buffer, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(actor)
    except Exception as error:
        name = type(actor).__qualname__
        if name not in _UNCOPYABLE:
            _UNCOPYABLE.add(name)
            print(f"metarl: ray workers step {name} one call per step (it cannot be copied to "
                  f"them: {_first_line(error)})", file=sys.stderr)
        return None
    return buffer.getvalue()


def _first_line(error: Exception) -> str:
    """``"Type: first line of the message"`` (Ray's errors carry pages of advice after it)."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def _death_cause(error: Exception) -> str:
    text = str(error)
    for line in text.splitlines():
        if "because" in line:  # Ray's first sentence says why, the rest is advice
            return line.strip().split(". ")[0].rstrip(".")
    return type(error).__name__
