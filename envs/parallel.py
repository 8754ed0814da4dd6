"""Which engine steps a family's sub-envs, for every family: one entry point, :func:`build_vector_env`.

``env_options.engine`` (a run's config) names the engine:

- the family's own in-process engines (``TaskFamily.engines``: ``rollout``, ``threads``,
  ``serial``, ``gym`` for the MuJoCo kernels), or ``serial`` for a family with a single one
  (a NumPy batch, a :class:`~metarl.vector_env.GymVectorTaskEnv` list such as Meta-World or the
  README's own family);
- ``processes``: worker processes, each stepping a contiguous slice built with the family's
  serial engine (:mod:`metarl.envs.processes`, shared memory, crashes raise clear errors);
- ``ray``: Ray actors, each owning a slice built with the family's best in-process engine
  (:mod:`metarl.envs.ray_workers`); the learner stays in the calling process;
- ``auto`` (the default): ``TaskFamily.auto_engine``, the fastest measured for the family
  (``benchmarks/bench_envs.py``): the MuJoCo kernels' own choice (rollout or threads), ``serial``
  for NumPy batches, ``processes`` for lists of Python envs (Meta-World: ~0.6 ms a step), which
  falls back to ``serial`` when a worker would get fewer than :data:`MIN_ENVS_PER_WORKER` sub-envs
  or there is one core.

Every engine seeds sub-env ``i`` of a reset with ``base + i`` and reproduces the family's
reference engine, so the choice changes speed, not results (bit for bit, except ``rollout``,
which tracks ``mj_step`` to solver tolerance; see ``metarl.envs.engine``).
"""

from __future__ import annotations

import inspect
import os
from functools import partial
from typing import Any

from metarl.tasks import MetaRLError, TaskFamily
from metarl.vector_env import VectorTaskEnv

PARALLEL_ENGINES = ("processes", "ray")
"""Engines that split any family's batch over workers (on top of its in-process engines)."""

MIN_ENVS_PER_WORKER = 4
"""``auto`` only forks workers when each gets at least this many sub-envs (below that a pipe
round trip, ~0.1 ms on 2 cores, outweighs what a slice of cheap envs saves)."""

ENGINE_OPTIONS = ("engine", "num_workers", "timeout_s", "pin_workers", "ray_address",
                  "ray_cpus_per_worker", "ray_restart_timeout_s", "ray_compiled_graph",
                  "ray_granularity")
"""``env_options`` keys read here; every other key goes to the family's ``make_vector_env``."""


def available_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def accepted_engines(family: TaskFamily) -> tuple[str, ...]:
    """``engine`` values that :func:`build_vector_env` accepts for ``family``."""
    local = tuple(e for e in family.engines if e != "auto") or ("serial",)
    return ("auto", *local, *PARALLEL_ENGINES)


def _family_options(family: TaskFamily, options: dict[str, Any]) -> dict[str, Any]:
    """Check ``options`` against the family's ``make_vector_env`` signature (a clear error for a
    key it does not take, instead of a TypeError deep in a worker)."""
    try:
        parameters = inspect.signature(family.make_vector_env).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        return options
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return options
    accepted = sorted({name for name, p in parameters.items()
                       if p.kind is p.KEYWORD_ONLY and name not in ("seed", "engine")})
    for key in options:
        if key not in accepted:
            raise MetaRLError(
                f"unknown env_options key {key!r} for {family.name}; accepted: "
                + ", ".join(sorted({*ENGINE_OPTIONS, *accepted}))
            )
    return options


def check_env_options(family: TaskFamily, options: dict[str, Any]) -> None:
    """Raise a one-line error for an ``env_options`` value :func:`build_vector_env` would refuse
    (an unknown engine or key, a bad ``num_workers``), without building anything."""
    engine = options.get("engine", "auto")
    accepted = accepted_engines(family)
    if engine not in accepted:
        raise MetaRLError(
            f"unknown engine {engine!r} for {family.name}; accepted: {', '.join(accepted)}"
        )
    num_workers = options.get("num_workers")
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                    or num_workers < 1):
        raise MetaRLError(f"env_options.num_workers must be a positive integer; got {num_workers!r}")
    if engine not in ("auto", *PARALLEL_ENGINES) and any(k in options for k in ("num_workers", "timeout_s")):
        raise MetaRLError(
            f"env_options.num_workers and timeout_s apply to engines 'processes' and 'ray'; "
            f"the engine is {engine!r}"
        )
    pin = options.get("pin_workers")
    if pin is not None and not isinstance(pin, bool):
        raise MetaRLError(f"env_options.pin_workers must be true or false (unset: auto); got {pin!r}")
    if pin is not None and engine not in ("auto", "processes"):
        raise MetaRLError(f"env_options.pin_workers applies to engine 'processes'; the engine is {engine!r}")
    compiled = options.get("ray_compiled_graph")
    if compiled is not None and not isinstance(compiled, bool):
        raise MetaRLError(f"env_options.ray_compiled_graph must be true or false (unset: auto); "
                          f"got {compiled!r}")
    if "ray_granularity" in options:
        from metarl.envs.ray_workers import check_granularity  # Ray is imported only on use

        check_granularity(options["ray_granularity"])
    ray_keys = ("ray_address", "ray_restart_timeout_s", "ray_cpus_per_worker", "ray_compiled_graph",
                "ray_granularity")
    if engine != "ray" and any(key in options for key in ray_keys):
        raise MetaRLError(
            f"env_options.{', '.join(ray_keys)} only apply to engine 'ray'; the engine is {engine!r}"
        )
    _family_options(family, {k: v for k, v in options.items() if k not in ENGINE_OPTIONS})


def local_builder(family: TaskFamily, *, engine: str | None, seed: int,
                  **family_options: Any):
    """``make(num_envs)`` building the family's in-process engine ``engine`` (``None``: its
    default); a plain function of the size, so worker processes and Ray actors can call it."""
    if family.engines:
        return partial(family.make_vector_env, seed=seed, engine=engine or family.engines[0],
                       **family_options)
    return partial(family.make_vector_env, seed=seed, **family_options)


def resolve_engine(family: TaskFamily, engine: str, num_envs: int, num_workers: int) -> str:
    """The engine ``engine`` stands for (``auto`` resolved for this family and batch size)."""
    if engine != "auto":
        return engine
    if family.auto_engine == "processes" and (
        num_workers < 2 or num_envs < MIN_ENVS_PER_WORKER * num_workers
    ):
        return "serial"
    return family.auto_engine


def build_vector_env(family: TaskFamily, num_envs: int, *, seed: int = 0, engine: str = "auto",
                     num_workers: int | None = None, timeout_s: float | None = None,
                     pin_workers: bool | None = None, ray_address: str | None = None,
                     ray_cpus_per_worker: float = 1.0,
                     ray_restart_timeout_s: float | None = None,
                     ray_compiled_graph: bool | None = None,
                     ray_granularity: str | None = None,
                     **family_options: Any) -> VectorTaskEnv:
    """A :class:`~metarl.vector_env.VectorTaskEnv` of ``num_envs`` sub-envs of ``family``.

    ``engine``: see the module docstring (:func:`accepted_engines`).  ``num_workers``: worker
    processes or Ray actors (default: the cores of this machine, or the Ray cluster's CPUs
    divided by ``ray_cpus_per_worker``).  ``timeout_s``: longest wait for one worker's answer
    before it counts as hung.  ``pin_workers``: pin each worker process to a core (unset: when
    the workers cover every core; see :func:`metarl.envs.processes.worker_cpus`).
    ``ray_address``: ``None`` starts a local Ray on 127.0.0.1, ``"auto"`` or ``"HOST:PORT"``
    joins a running cluster.  ``ray_compiled_graph``: steps through a Ray compiled graph
    (``True``) or ordinary actor calls (``False``); unset: where it pays
    (:func:`metarl.envs.ray_workers.compile_pays`); they apply to ``ray_granularity="step"``,
    one call per env step, while ``"episode"`` (the default) runs whole episodes of the
    collector's policy on the workers, one call per episode.  Other options go to the family.
    """
    given = {"engine": engine, "num_workers": num_workers, "timeout_s": timeout_s,
             "pin_workers": pin_workers, "ray_address": ray_address,
             "ray_restart_timeout_s": ray_restart_timeout_s, "ray_compiled_graph": ray_compiled_graph,
             "ray_granularity": ray_granularity,
             **family_options}
    if ray_cpus_per_worker != 1.0:
        given["ray_cpus_per_worker"] = ray_cpus_per_worker
    check_env_options(family, {k: v for k, v in given.items() if v is not None})
    limits = {} if timeout_s is None else {"timeout_s": float(timeout_s)}
    if engine == "ray":
        from metarl.envs import ray_workers

        return ray_workers.RayVectorEnv(
            local_builder(family, engine=None, seed=seed, **ray_workers.slice_options(
                family, family_options, ray_cpus_per_worker)),
            num_envs, seed=seed, num_workers=num_workers, cpus_per_worker=ray_cpus_per_worker,
            address=ray_address, restart_timeout_s=ray_restart_timeout_s,
            compiled_graph=ray_compiled_graph, granularity=ray_granularity or "episode", **limits,
        )
    workers = num_workers or available_cpus()
    engine = resolve_engine(family, engine, num_envs, workers)
    if engine == "processes":
        from metarl.envs.processes import ProcessVectorEnv

        serial = "serial" if family.engines else None
        return ProcessVectorEnv(
            local_builder(family, engine=serial, seed=seed, **family_options), num_envs,
            num_workers=workers, seed=seed, pin_workers=pin_workers, **limits,
        )
    local = None if engine == "serial" and not family.engines else engine
    return local_builder(family, engine=local, seed=seed, **family_options)(num_envs)
