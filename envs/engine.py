"""The fast vectorised engine for MuJoCo task families.

:class:`MujocoVectorEnv` implements :class:`metarl.vector_env.VectorTaskEnv` without Gymnasium in
the hot loop: each sub-env has its own ``MjData`` (and its own ``MjModel`` when tasks change the
dynamics; otherwise one model is shared), the loop calls ``mujoco.mj_step(model, data,
nstep=frame_skip)`` directly, copies the few ``MjData`` fields the family needs into batch arrays,
and a family's :class:`BatchKernel` computes observations, rewards and termination in NumPy over
the whole batch.  How the batch's physics is stepped is the ``engine``:

- ``"rollout"``: one ``mujoco.rollout`` call per env step advances every sub-env ``frame_skip``
  physics steps on MuJoCo's own C++ thread pool, no Python per sub-env.  Only for kernels that
  read nothing but ``qpos``/``qvel`` (HalfCheetah, Hopper, Walker2D): the rollout returns the
  physics state only.  MuJoCo's solver warm start (``qacc_warmstart``) is not part of that state,
  so each call is warm-started from the last physics step's finite-difference acceleration; the
  trajectory equals ``mj_step``'s to solver tolerance, not bit for bit
  (``tests/test_envs_engine.py``).
- ``"threads"``: contiguous slices of the batch stepped with ``mj_step`` on a small thread pool
  (``mj_step`` releases the GIL); bit-identical to the Gymnasium reference.
- ``"processes"`` and ``"ray"`` (:mod:`metarl.envs.parallel`, for every family): worker processes
  or Ray actors each stepping a slice with one of these engines.
- ``"serial"``: the threads engine in the calling thread; ``"gym"``: the reference engine.

``"auto"`` (the default) is ``"rollout"`` where the kernel allows it, else ``"threads"``: the
fastest measured on 2 cores (benchmarks/RESULTS.md).

Each family's single Gymnasium env (a v5 subclass) is the reference; the engine reproduces it:
the same model file, the same reset noise drawn from ``default_rng(seed + i)`` (what Gymnasium's
``reset(seed=...)`` uses), the same seeds as :class:`~metarl.vector_env.GymVectorTaskEnv`, and
``tests/test_envs_engine.py`` checks that both give the same observations and rewards.
"""

from __future__ import annotations

import abc
import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import mujoco
import mujoco.rollout
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import expand_model_path

from metarl.tasks import MetaRLError, Task
from metarl.vector_env import GymVectorTaskEnv, ResetSeeds, check_actions, check_tasks

ENGINES = ("auto", "rollout", "threads", "serial", "gym")
"""The in-process engines a MuJoCo family's ``make_vector_env(..., engine=...)`` accepts; the
first is the default.  ``processes`` and ``ray`` split any family's batch over workers
(:func:`metarl.envs.parallel.build_vector_env`), each worker running one of these."""

ROLLOUT_FIELDS = frozenset({"qpos", "qvel"})
"""The ``MjData`` fields a kernel may read to run on the ``"rollout"`` engine."""

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS
"""The physics state ``mujoco.rollout`` takes and returns: time, qpos, qvel, act, plugin state."""

DEFAULT_NUM_THREADS = 2

FieldGetter = Callable[[mujoco.MjData], np.ndarray]


def load_model(xml_file: str) -> mujoco.MjModel:
    """Load one of Gymnasium's MuJoCo assets (e.g. ``"ant.xml"``) or an absolute path."""
    return mujoco.MjModel.from_xml_path(expand_model_path(xml_file))


class BatchKernel(abc.ABC):
    """A family's vectorised maths: which ``MjData`` fields it reads, observations and rewards.

    A kernel is built for one batch size (``num_envs``) and holds that batch's task arrays.
    ``state`` dicts map each name in :meth:`fields` to an array ``[num_envs, *field_shape]``.
    """

    frame_skip: int
    reset_noise_scale: float
    """Half-width of the uniform noise on the initial ``qpos`` (Gymnasium v5's ``reset_noise_scale``)."""
    gaussian_velocity_noise: bool = False
    """Initial ``qvel`` noise is ``scale * N(0, 1)`` (HalfCheetah, Ant) rather than uniform."""
    post_constraint: bool = False
    """Call ``mj_rnePostConstraint`` after stepping (contact forces ``cfrc_ext`` are read)."""
    dynamics_tasks: bool = False
    """Tasks write into the model: one ``MjModel`` per sub-env, and :meth:`apply_task`."""

    def __init__(self, model: mujoco.MjModel, num_envs: int) -> None:
        self.model = model
        self.num_envs = num_envs
        self.dt = float(model.opt.timestep) * self.frame_skip

    @abc.abstractmethod
    def fields(self) -> dict[str, FieldGetter]:
        """Name -> function returning a view of one ``MjData`` field (copied after every step)."""

    def reset_state(
        self, rng: np.random.Generator, init_qpos: np.ndarray, init_qvel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Initial ``(qpos [nq], qvel [nv])`` with the reference env's noise, drawn in its order."""
        scale = self.reset_noise_scale
        qpos = init_qpos + rng.uniform(-scale, scale, size=init_qpos.size)
        if self.gaussian_velocity_noise:
            qvel = init_qvel + scale * rng.standard_normal(init_qvel.size)
        else:
            qvel = init_qvel + rng.uniform(-scale, scale, size=init_qvel.size)
        return qpos, qvel

    @abc.abstractmethod
    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Store the batch's task arrays (one task per sub-env)."""

    @abc.abstractmethod
    def observations(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """``[num_envs, observation_dim]`` float64 observations from the gathered state."""

    @abc.abstractmethod
    def rewards(
        self, previous: dict[str, np.ndarray], state: dict[str, np.ndarray], actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(rewards [B], terminated [B] bool, infos)`` for one step from ``previous`` to ``state``.

        ``actions`` is ``[B, action_dim]`` float64; ``infos`` holds every reward term ``[B]``.
        """

    def apply_task(self, model: mujoco.MjModel, data: mujoco.MjData, task: Task) -> None:
        """Write ``task``'s parameters into ``model`` (only for ``dynamics_tasks`` kernels)."""
        raise MetaRLError(f"{type(self).__name__} has no dynamics tasks to write into a model")


def supports_rollout(kernel: BatchKernel) -> bool:
    """Whether ``kernel`` can run on the ``"rollout"`` engine (reads only qpos/qvel)."""
    return set(kernel.fields()) <= ROLLOUT_FIELDS and not kernel.post_constraint


class MujocoVectorEnv:
    """A batch of MuJoCo sub-envs stepped on ``num_threads`` threads, with ``mj_step`` or rollout.

    Implements :class:`metarl.vector_env.VectorTaskEnv`; no autoreset.  ``stepping="threads"``
    calls ``mj_step`` per sub-env on a thread pool (``num_threads=1``: serially in the calling
    thread); ``stepping="rollout"`` advances the whole batch with one ``mujoco.rollout`` call on
    MuJoCo's thread pool (kernels for which :func:`supports_rollout` holds).  Call :meth:`reset`
    after :meth:`set_tasks`.
    """

    def __init__(
        self,
        kernel: BatchKernel,
        *,
        max_episode_steps: int,
        seed: int = 0,
        num_threads: int = DEFAULT_NUM_THREADS,
        stepping: str = "threads",
    ) -> None:
        if num_threads < 1:
            raise MetaRLError(f"num_threads must be at least 1; got {num_threads}")
        if stepping not in ("threads", "rollout"):
            raise MetaRLError(f"unknown stepping {stepping!r}; accepted: threads, rollout")
        if stepping == "rollout" and not supports_rollout(kernel):
            extra = sorted(set(kernel.fields()) - ROLLOUT_FIELDS) or ["contact forces"]
            raise MetaRLError(
                f"engine 'rollout' needs a family observed through qpos/qvel only; "
                f"{type(kernel).__name__} also reads {', '.join(extra)}: use engine 'threads' "
                "or 'processes'"
            )
        self.kernel = kernel
        self.num_envs = kernel.num_envs
        self.max_episode_steps = max_episode_steps
        self.stepping = stepping
        self._reset_seeds = ResetSeeds(seed)
        self._elapsed = 0
        base_model = kernel.model
        if kernel.dynamics_tasks:
            self.models = [copy.deepcopy(base_model) for _ in range(self.num_envs)]
        else:
            self.models = [base_model] * self.num_envs
        self.datas = [mujoco.MjData(model) for model in self.models]
        self._init_qpos = self.datas[0].qpos.copy()
        self._init_qvel = self.datas[0].qvel.copy()
        self.action_dim = int(base_model.nu)
        low, high = base_model.actuator_ctrlrange.astype(np.float32).T
        self.action_low, self.action_high = low.copy(), high.copy()
        getters = kernel.fields()
        self._names = list(getters)
        # Views into each MjData stay valid for its lifetime: build them once, copy every step.
        self._views = [[getters[name](data) for name in self._names] for data in self.datas]
        self._state = self._empty_state()
        self._previous = self._empty_state()
        self.observation_dim = int(kernel.observations(self._state).shape[1])
        self.num_threads = min(num_threads, self.num_envs)
        self._actions = np.zeros((self.num_envs, self.action_dim))
        self._pool = None
        self._rollout = None
        self._closed = False
        if stepping == "rollout":
            self._init_rollout(base_model)
            return
        bounds = np.linspace(0, self.num_envs, self.num_threads + 1).astype(int)
        self._slices = list(zip(bounds[:-1], bounds[1:]))
        # The calling thread steps the first slice itself; the pool steps the others.
        if self.num_threads > 1:
            self._pool = ThreadPoolExecutor(self.num_threads - 1, thread_name_prefix="mujoco-step")

    def _init_rollout(self, model: mujoco.MjModel) -> None:
        frame_skip, n = self.kernel.frame_skip, self.num_envs
        size = mujoco.mj_stateSize(model, STATE_SPEC)
        before_qpos = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME)
        self._qpos = slice(before_qpos, before_qpos + model.nq)
        self._qvel = slice(before_qpos + model.nq, before_qpos + model.nq + model.nv)
        self._physics = np.zeros((n, size))
        self._warmstart = np.zeros((n, model.nv))
        self._controls = np.zeros((n, frame_skip, model.nu))
        self._trajectory = np.zeros((n, frame_skip, size))
        self._sensordata = np.zeros((n, frame_skip, model.nsensordata))
        self._models = list(self.models)
        # nthread=0 runs in the calling thread; otherwise MuJoCo's pool needs one MjData a thread.
        threads = self.num_threads if self.num_threads > 1 else 0
        self._rollout = mujoco.rollout.Rollout(nthread=threads)
        self._rollout_datas = [mujoco.MjData(model) for _ in range(max(threads, 1))]

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {
            name: np.zeros((self.num_envs, *view.shape))
            for name, view in zip(self._names, self._views[0])
        }

    def _gather(self, index: int, state: dict[str, np.ndarray]) -> None:
        for name, view in zip(self._names, self._views[index]):
            state[name][index] = view

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        check_tasks(self, tasks)
        self.kernel.set_tasks(tasks)
        if self.kernel.dynamics_tasks:
            for model, data, task in zip(self.models, self.datas, tasks):
                self.kernel.apply_task(model, data, task)

    def reset(self, *, seed: int | None = None) -> np.ndarray:
        base = self._reset_seeds.next(seed)
        self._elapsed = 0
        for index, (model, data) in enumerate(zip(self.models, self.datas)):
            rng = np.random.default_rng(base + index)
            qpos, qvel = self.kernel.reset_state(rng, self._init_qpos, self._init_qvel)
            mujoco.mj_resetData(model, data)
            data.qpos[:] = qpos
            data.qvel[:] = qvel
            mujoco.mj_forward(model, data)
            self._gather(index, self._state)
            if self._rollout is not None:
                mujoco.mj_getState(model, data, self._physics[index], STATE_SPEC)
                self._warmstart[index] = data.qacc_warmstart
        return self.kernel.observations(self._state).astype(np.float32)

    def _step_slice(self, start: int, stop: int) -> None:
        frame_skip = self.kernel.frame_skip
        post_constraint = self.kernel.post_constraint
        state = self._state
        for index in range(start, stop):
            model, data = self.models[index], self.datas[index]
            data.ctrl[:] = self._actions[index]
            mujoco.mj_step(model, data, nstep=frame_skip)
            if post_constraint:
                mujoco.mj_rnePostConstraint(model, data)
            for name, view in zip(self._names, self._views[index]):
                state[name][index] = view

    def _step_rollout(self) -> None:
        self._controls[:] = self._actions[:, None, :]
        self._rollout.rollout(
            self._models, self._rollout_datas, self._physics, self._controls,
            nstep=self.kernel.frame_skip, initial_warmstart=self._warmstart,
            state=self._trajectory, sensordata=self._sensordata, skip_checks=True,
        )
        last = self._trajectory[:, -1]
        before_last = self._trajectory[:, -2] if self.kernel.frame_skip > 1 else self._physics
        # mj_step leaves qacc_warmstart = the last step's acceleration; its finite difference
        # (exact for the explicit part of Euler) starts the solver next to the solution.
        timestep = self.models[0].opt.timestep
        np.subtract(last[:, self._qvel], before_last[:, self._qvel], out=self._warmstart)
        self._warmstart /= timestep
        self._physics[:] = last
        for name, columns in (("qpos", self._qpos), ("qvel", self._qvel)):
            if name in self._state:
                self._state[name][:] = last[:, columns]

    def step(self, actions: np.ndarray):
        if self._closed:
            raise MetaRLError("step on a closed vector env")
        actions = check_actions(self, actions)
        self._actions[:] = actions
        self._previous, self._state = self._state, self._previous
        if self._rollout is not None:
            self._step_rollout()
        elif self._pool is None:
            self._step_slice(0, self.num_envs)
        else:
            futures = [self._pool.submit(self._step_slice, *bounds) for bounds in self._slices[1:]]
            self._step_slice(*self._slices[0])
            for future in futures:
                future.result()  # re-raises a worker thread's exception here
        self._elapsed += 1
        rewards, terminated, infos = self.kernel.rewards(
            self._previous, self._state, self._actions
        )
        observations = self.kernel.observations(self._state).astype(np.float32)
        truncated = np.full(self.num_envs, self._elapsed >= self.max_episode_steps) & ~terminated
        return observations, rewards.astype(np.float32), terminated, truncated, infos

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._rollout is not None:
            self._rollout.close()


def mujoco_vector_env_factory(
    make_kernel: Callable[[int], BatchKernel],
    make_env: Callable[..., Any],
    default_max_episode_steps: int,
) -> Callable[..., Any]:
    """A family's ``make_vector_env(num_envs, *, seed=0, engine="auto", num_threads=2)``.

    ``engine`` is one of :data:`ENGINES` (see the module docstring); ``num_threads`` is the
    number of stepping threads.  Families built with it declare ``engines=ENGINES``.
    """

    def make_vector_env(
        num_envs: int,
        *,
        seed: int = 0,
        engine: str = ENGINES[0],
        num_threads: int = DEFAULT_NUM_THREADS,
        max_episode_steps: int = default_max_episode_steps,
    ) -> Any:
        if engine not in ENGINES:
            raise MetaRLError(f"unknown engine {engine!r}; accepted: {', '.join(ENGINES)}")
        if engine == "gym":
            return GymVectorTaskEnv(
                make_env, num_envs, max_episode_steps=max_episode_steps, seed=seed
            )
        kernel = make_kernel(num_envs)
        rollout = engine == "rollout" or (engine == "auto" and supports_rollout(kernel))
        return MujocoVectorEnv(
            kernel,
            max_episode_steps=max_episode_steps,
            seed=seed,
            num_threads=1 if engine == "serial" else num_threads,
            stepping="rollout" if rollout else "threads",
        )

    return make_vector_env
