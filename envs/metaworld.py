"""Meta-World v3 benchmarks (Yu et al., 2019, "Meta-World: A Benchmark and Evaluation for
Multi-Task and Meta Reinforcement Learning"; the ``metaworld`` 3.x package) as task families.

Optional: install the ``metaworld`` extra (it pins ``mujoco==3.3.0``).  When ``import metaworld``
works, importing this module registers ``ML10``, ``ML45`` and ``ML1-<env name>`` for each of
the 50 v3 environments (e.g. ``ML1-reach-v3``); :func:`metaworld_family` builds any of them.

The benchmark fixes its own split: ML1 draws 50 train and 50 test goals of one environment;
ML10 (10 train / 5 test environments) and ML45 (45 / 5) draw 50 goals per environment.  A
task is a JSON value naming one of the benchmark's tasks, ``{"benchmark": "ML10", "env_name":
"reach-v3", "split": "train", "index": 3}`` (``index`` into the benchmark's ``train_tasks`` or
``test_tasks``).  The family's ``sample_tasks(rng, num_train + num_test)`` returns every train
task and then every test task, so :class:`metarl.tasks.TaskSampler` reproduces the benchmark's
split exactly; any other count is a draw from the training tasks.  The benchmark is built
lazily (on first use) with a fixed seed, because building ML45 resets 50 environments 50 times.
Each step's ``info`` carries Meta-World's ``success`` flag (1.0 once the task is solved).
"""

from __future__ import annotations

from functools import cache, partial
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from metarl.tasks import MetaRLError, Task, TaskFamily, register_family
from metarl.vector_env import GymVectorTaskEnv

try:
    import metaworld
    import metaworld.env_dict
except ImportError:  # the optional extra is not installed: nothing is registered
    metaworld = None

HORIZON = 500
GOALS_PER_ENVIRONMENT = 50
"""Meta-World draws 50 goals per environment class for each split."""
BENCHMARK_SEED = 0
BENCHMARKS = ("ML1", "ML10", "ML45")


def available() -> bool:
    """Whether the ``metaworld`` extra is installed."""
    return metaworld is not None


def is_metaworld_name(name: str) -> bool:
    """Whether ``name`` names a Meta-World family (``ML10``, ``ML45``, ``ML1-<env name>``),
    installed or not: a shipped Meta-World config can be recognised without the extra."""
    return name in ("ML10", "ML45") or name.startswith("ML1-")


def _require_metaworld(family: str | None = None) -> None:
    if metaworld is None:
        what = f"env family {family!r} is Meta-World's; " if family else ""
        raise MetaRLError(
            f"{what}Meta-World families need the optional extra: pip install 'metarl[metaworld]' "
            "(then the README's mujoco fix)"
        )


def _environment_counts(benchmark: str, env_name: str | None) -> tuple[int, int]:
    """Number of (train, test) environment classes, read without building the benchmark."""
    if benchmark == "ML1":
        return 1, 1
    classes = metaworld.env_dict.ML10_V3 if benchmark == "ML10" else metaworld.env_dict.ML45_V3
    return len(classes["train"]), len(classes["test"])


@cache
def load_benchmark(benchmark: str, env_name: str | None = None, seed: int = BENCHMARK_SEED) -> Any:
    """Build (once per process) the ``metaworld.ML1(env_name)``, ``ML10`` or ``ML45`` benchmark."""
    _require_metaworld()
    if benchmark == "ML1":
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise MetaRLError(f"unknown Meta-World env {env_name!r}; accepted: {metaworld.ML1.ENV_NAMES}")
        return metaworld.ML1(env_name, seed=seed)
    if benchmark == "ML10":
        return metaworld.ML10(seed=seed)
    if benchmark == "ML45":
        return metaworld.ML45(seed=seed)
    raise MetaRLError(f"unknown Meta-World benchmark {benchmark!r}; accepted: {BENCHMARKS}")


def benchmark_tasks(benchmark: str, env_name: str | None = None, seed: int = BENCHMARK_SEED):
    """Our task dicts for the benchmark's ``(train_tasks, test_tasks)``, in the benchmark's order."""
    loaded = load_benchmark(benchmark, env_name, seed)

    def describe(tasks: list[Any], split: str) -> list[Task]:
        return [
            {"benchmark": benchmark, "env_name": task.env_name, "split": split, "index": index}
            for index, task in enumerate(tasks)
        ]

    return describe(loaded.train_tasks, "train"), describe(loaded.test_tasks, "test")


class ClassEnvPool:
    """Meta-World environment objects by class, shared by the sub-envs of one vector env.

    A sub-env whose task changes class hands its environment object back and takes an idle one
    of the new class, built only when none is idle.  Before the pool, every sub-env kept one
    object of each class it had met: ~20 MB each here (all 45 ML45 classes: 0.9 GB a sub-env),
    so an ML45 run with 200 sub-envs drawing new tasks every iteration grew towards 175 GB.  Now
    at most one object a sub-env is in use and at most ``max_idle`` wait idle (the least recently
    returned are closed first).  Which object serves a task does not change results: Meta-World's
    ``set_task`` and ``reset(seed=...)`` determine an environment's whole state.
    """

    def __init__(self, max_idle: int) -> None:
        if max_idle < 0:
            raise MetaRLError(f"max_idle must be >= 0; got {max_idle}")
        self.max_idle = max_idle
        self._idle: list[tuple[tuple[str, type], Any]] = []  # oldest first
        self._users = 0
        self.num_built = 0

    def attach(self) -> None:
        self._users += 1

    def take(self, key: tuple[str, type], build: Callable[[], Any]) -> Any:
        """An idle environment object of class ``key`` (the most recently returned), else a new one."""
        for position in range(len(self._idle) - 1, -1, -1):
            if self._idle[position][0] == key:
                return self._idle.pop(position)[1]
        self.num_built += 1
        return build()

    def give(self, key: tuple[str, type], env: Any) -> None:
        """Take back an object no sub-env uses; close the oldest idle ones beyond ``max_idle``."""
        self._idle.append((key, env))
        while len(self._idle) > self.max_idle:
            self._idle.pop(0)[1].close()

    def detach(self) -> None:
        """A user is closed; the last one closes the idle objects."""
        self._users -= 1
        if self._users <= 0:
            for _, env in self._idle:
                env.close()
            self._idle.clear()


STANDALONE_MAX_IDLE = 4
"""Idle objects a :class:`MetaWorldTaskEnv` built on its own keeps (switching class then rebuilds
at most every fifth class: ~0.1 s each here)."""


class MetaWorldTaskEnv(gym.Env):
    """One Gymnasium env serving any task of a Meta-World benchmark through ``set_task``.

    Holds one Meta-World environment object, of the current task's class, from ``pool`` (the
    vector env's :class:`ClassEnvPool`, shared by its sub-envs; a private one when built alone);
    the observation ``[39]`` hides the goal (Meta-World's ML setting).  ``info["success"]`` is
    Meta-World's success flag.  Call ``reset()`` after ``set_task``: the object of the new class
    is taken then, once every sub-env of a vector env has handed back its old one.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        task: Task | None = None,
        *,
        benchmark: str,
        env_name: str | None = None,
        seed: int = BENCHMARK_SEED,
        pool: ClassEnvPool | None = None,
    ) -> None:
        self._benchmark = load_benchmark(benchmark, env_name, seed)
        self._pool = pool if pool is not None else ClassEnvPool(STANDALONE_MAX_IDLE)
        self._pool.attach()
        self._active: Any = None
        self._active_key: tuple[str, type] | None = None
        self._pending: tuple[tuple[str, type], Any] | None = None
        train_tasks, _ = benchmark_tasks(benchmark, env_name, seed)
        self.set_task(task if task is not None else train_tasks[0])
        self._bind()
        self.observation_space = self._active.observation_space
        self.action_space = self._active.action_space

    def set_task(self, task: Task) -> None:
        split = task["split"]
        if split not in ("train", "test"):
            raise MetaRLError(f"Meta-World task split {split!r}; accepted: train, test")
        tasks = self._benchmark.train_tasks if split == "train" else self._benchmark.test_tasks
        benchmark_task = tasks[task["index"]]
        if benchmark_task.env_name != task["env_name"]:
            raise MetaRLError(
                f"task {task} names {task['env_name']!r} but the benchmark's task is "
                f"{benchmark_task.env_name!r}; were the tasks drawn with another benchmark seed?"
            )
        classes = self._benchmark.train_classes if split == "train" else self._benchmark.test_classes
        # Keyed by the class itself: ML1's train and test goals are one class, so a sub-env that
        # moves between them keeps its object (ML10/ML45's splits have different classes).
        key = (benchmark_task.env_name, classes[benchmark_task.env_name])
        if self._active is not None and key != self._active_key:
            self._pool.give(self._active_key, self._active)
            self._active, self._active_key = None, None
        self._pending = (key, benchmark_task)
        self.task = dict(task)

    def _bind(self) -> None:
        """Apply the task ``set_task`` recorded, taking an object of its class from the pool."""
        if self._pending is None:
            return
        key, benchmark_task = self._pending
        if self._active is None:
            self._active, self._active_key = self._pool.take(key, key[1]), key
        self._active.set_task(benchmark_task)
        self._pending = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._bind()
        return self._active.reset(seed=seed)

    def step(self, action: np.ndarray):
        if self._pending is not None:
            raise MetaRLError("MetaWorldTaskEnv.step after set_task: call reset() first")
        observation, reward, terminated, truncated, info = self._active.step(action)
        info = dict(info)
        info["success"] = float(info.get("success", 0.0))
        return observation, float(reward), terminated, truncated, info

    def close(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
        self._pool.detach()


def _family_name(benchmark: str, env_name: str | None) -> str:
    return f"ML1-{env_name}" if benchmark == "ML1" else benchmark


DEFAULT_IDLE_FRACTION = 4
"""Idle objects a vector env keeps by default: one per this many sub-envs (see
:func:`metaworld_vector_env`)."""


def idle_objects_for(num_envs: int, idle_objects: int | None) -> int:
    """The idle-object cap of a vector env of ``num_envs`` sub-envs (``env_options.idle_objects``,
    checked; ``None``: a quarter of the sub-envs)."""
    if idle_objects is None:
        return num_envs // DEFAULT_IDLE_FRACTION
    if isinstance(idle_objects, bool) or not isinstance(idle_objects, int) or idle_objects < 0:
        raise MetaRLError(f"env_options.idle_objects must be an integer >= 0 (Meta-World objects kept "
                          f"idle per vector env; unset: a quarter of its sub-envs); got {idle_objects!r}")
    return idle_objects


def metaworld_vector_env(make_env: Callable[..., Any], num_envs: int, *, seed: int = 0,
                         idle_objects: int | None = None) -> GymVectorTaskEnv:
    """A vector env of Meta-World sub-envs sharing one :class:`ClassEnvPool` (one per worker
    under ``engine=processes``).

    ``idle_objects`` (``env_options.idle_objects``): how many environment objects of classes no
    sub-env uses now the pool keeps for later tasks (unset: a quarter of the sub-envs).  An
    object is ~20 MB (its model's meshes) and takes 0.1-0.35 s to build.  ML1 needs none (train
    and test goals share the class).  On ML45, where every meta-batch draws classes anew, the
    pool reuses few objects whatever it keeps.  Simulated for MAML-TRPO's ML45 meta-batch (450
    sub-envs on 2 workers, 40 iterations): one idle object per sub-env (the rule before this
    option) held up to 800 objects (~16 GB) and still built 309 an iteration; a quarter, 552
    (~11 GB) building 404 (~30 s more of builds an iteration, shared by the workers, beside ~13
    min iterations on 2 cores); none, 450 (~9 GB) building 443.  ML10's 200 sub-envs: 360, 240
    and 200 objects building 92, 155 and 180.  Raise it on a large machine, lower it on a small one.
    """
    pool = ClassEnvPool(max_idle=idle_objects_for(num_envs, idle_objects))
    return GymVectorTaskEnv(partial(make_env, pool=pool), num_envs, max_episode_steps=HORIZON, seed=seed)


def metaworld_family(
    benchmark: str, env_name: str | None = None, *, seed: int = BENCHMARK_SEED
) -> TaskFamily:
    """The TaskFamily of a Meta-World benchmark (``"ML1"`` with ``env_name``, ``"ML10"``, ``"ML45"``).

    Not registered: :func:`register_metaworld_families` registers the defaults.
    """
    _require_metaworld()
    if benchmark not in BENCHMARKS:
        raise MetaRLError(f"unknown Meta-World benchmark {benchmark!r}; accepted: {BENCHMARKS}")
    num_train_classes, num_test_classes = _environment_counts(benchmark, env_name)
    num_train = num_train_classes * GOALS_PER_ENVIRONMENT
    num_test = num_test_classes * GOALS_PER_ENVIRONMENT

    def sample_tasks(rng: np.random.Generator, num_tasks: int) -> list[Task]:
        train_tasks, test_tasks = benchmark_tasks(benchmark, env_name, seed)
        if (len(train_tasks), len(test_tasks)) != (num_train, num_test):
            raise MetaRLError(
                f"Meta-World {benchmark} has {len(train_tasks)}/{len(test_tasks)} tasks; "
                f"expected {num_train}/{num_test}: is the installed metaworld a 3.x release?"
            )
        if num_tasks == num_train + num_test:  # TaskSampler's split: the benchmark's own
            return train_tasks + test_tasks
        index = rng.choice(len(train_tasks), size=num_tasks, replace=num_tasks > len(train_tasks))
        return [dict(train_tasks[i]) for i in index]

    make_env = partial(MetaWorldTaskEnv, benchmark=benchmark, env_name=env_name, seed=seed)
    return TaskFamily(
        name=_family_name(benchmark, env_name),
        description=f"Meta-World v3 {benchmark} {env_name or ''}: the benchmark's own tasks, horizon 500",
        citation="Yu et al. (2019), Meta-World, sec. 4 (ML1/ML10/ML45); metaworld 3.x (v3 envs)",
        sample_tasks=sample_tasks,
        make_vector_env=partial(metaworld_vector_env, make_env),
        max_episode_steps=HORIZON,
        num_train_tasks=num_train,
        num_test_tasks=num_test,
        task_parameter="env_name",
        make_env=make_env,
        metadata={"benchmark": benchmark, "env_name": env_name},
        evaluation_protocol="adapt_then_evaluate",  # the benchmark's own (Yu et al. 2019, sec. 5)
    )


def require_family(name: str) -> None:
    """Raise the install hint when ``name`` is a Meta-World family and the extra is missing."""
    if is_metaworld_name(name):
        _require_metaworld(name)


def register_metaworld_families() -> list[TaskFamily]:
    """Register ML10, ML45 and ML1-<name> for every v3 environment (when metaworld is installed)."""
    if metaworld is None:
        return []
    families = [metaworld_family("ML10"), metaworld_family("ML45")]
    families += [metaworld_family("ML1", name) for name in metaworld.ML1.ENV_NAMES]
    return [register_family(family) for family in families]


METAWORLD_FAMILIES = register_metaworld_families()
