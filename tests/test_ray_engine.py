"""Ray rollout workers on a real 2-node cluster on this machine (127.0.0.1 only, telemetry off):
the same metrics as the local engine, a killed worker replayed, a lost node a clean stop and
an exact resume.  Skipped only where the ``ray`` extra is not installed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from metarl.envs.ray_workers import LOCAL_RAY_ENVIRONMENT

os.environ.update(LOCAL_RAY_ENVIRONMENT)  # before Ray is imported: loopback only, no telemetry
ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

from conftest import TINY  # noqa: E402
from metarl.checkpoint import latest_checkpoint  # noqa: E402
from metarl.config import load_config  # noqa: E402
from metarl.envs.parallel import build_vector_env  # noqa: E402
from metarl.envs.ray_workers import RayVectorEnv, WorkerPool, compile_pays  # noqa: E402
from metarl.logger import read_metrics  # noqa: E402
from metarl.tasks import MetaRLError, get_family  # noqa: E402
from metarl.train import train  # noqa: E402

RAY = ["env_options.engine=ray", "env_options.num_workers=2"]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module's actors, for workers



@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, one CPU each, torn down at the end even on failure."""
    from ray.cluster_utils import Cluster

    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        head.add_node(num_cpus=1)
        ray.init(address=head.address, configure_logging=False, log_to_driver=False)
        yield head
    finally:
        ray.shutdown()
        WorkerPool.shutdown_all()
        head.shutdown()


def _wait_for_free_cpus(cpus: float, timeout_s: float = 60.0) -> None:
    """Until the cluster has ``cpus`` CPUs free (a killed actor's CPU returns a moment later)."""
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0.0) < cpus:
        assert time.monotonic() < deadline, f"the cluster still has {ray.available_resources()} free"
        time.sleep(0.2)


def _strip(metrics):
    """Metrics without timings (``time/*``; PEARL's gradient steps per second too)."""
    return [{k: v for k, v in m.items() if not k.startswith("time/") and not k.endswith("_per_second")}
            for m in metrics]


def _train(tmp_path, name, extra=()):
    config = load_config(None, [*TINY, f"run_dir={tmp_path / name}", *extra])
    return train(config, quiet=True)


@pytest.fixture(scope="module")
def local_metrics(tmp_path_factory):
    """The reference: the same tiny MAML run on the local engine."""
    return _strip(read_metrics(_train(tmp_path_factory.mktemp("local"), "local")))


def _hook(monkeypatch, method: str, at_call: int, action):
    """Run ``action(env)`` once, before the ``at_call``-th call of ``RayVectorEnv.<method>``
    (``step``: granularity step; ``collect_remote``: an episode on the workers)."""
    original = getattr(RayVectorEnv, method)
    count = {"calls": 0}

    def hooked(self, *args, **kwargs):
        count["calls"] += 1
        if count["calls"] == at_call:
            action(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RayVectorEnv, method, hooked)
    return count




def test_maml_on_a_two_node_cluster_equals_the_local_engine(cluster, tmp_path, local_metrics):
    run_dir = _train(tmp_path, "ray", RAY)
    assert _strip(read_metrics(run_dir)) == local_metrics
    assert not WorkerPool._pools, "the run's envs closed, its actors were stopped"
    env = build_vector_env(get_family("Navigation2D"), 4, engine="ray", num_workers=2)
    assert len({node for _, node in env.pool.places}) == 2, "one worker on each node"
    env.close()


@pytest.mark.parametrize("agent", ["rl2", "pearl"])
def test_rl2_and_pearl_run_on_ray_workers_unchanged(cluster, tmp_path, agent):
    """No agent-specific code: RL²'s trials and PEARL's one-task-at-a-time collection step on the
    actors and give the local engine's numbers."""
    from test_pearl import TINY_PEARL
    from test_rl2 import RL2_TINY

    overrides = {"rl2": RL2_TINY, "pearl": TINY_PEARL}[agent]
    runs = []
    for name, extra in (("local", []), ("ray", RAY)):
        config = load_config(None, [*overrides, "num_iterations=2", f"run_dir={tmp_path / name}", *extra])
        runs.append(_strip(read_metrics(train(config, quiet=True))))
    assert runs[0] == runs[1]


def test_seeds_run_as_ray_tasks_across_the_nodes_and_equal_single_runs(cluster, tmp_path):
    from metarl import seeds

    config = load_config(None, [*TINY, "num_iterations=2", f"run_dir={tmp_path / 'group'}"])
    group_dir, jobs = seeds.plan_group(config, [0, 1])
    run_dirs = seeds.run_group(jobs, seeds.RayTasks(None), poll_seconds=0.2)
    for seed, run_dir in zip((0, 1), run_dirs):
        single = load_config(None, [*TINY, "num_iterations=2", f"seed={seed}",
                                    f"run_dir={tmp_path / f'single{seed}'}"])
        assert _strip(read_metrics(run_dir)) == _strip(read_metrics(train(single, quiet=True)))


def test_a_worker_killed_between_steps_is_replaced_and_its_slice_replayed(
        cluster, tmp_path, local_metrics, monkeypatch, capfd):
    """Granularity step, compiled steps (a failed one rebuilds every slice; ordinary calls: the
    lost node below): worker 1 killed between two steps mid-rollout."""
    killed = {}

    def kill_worker_1(env):
        killed["pid"] = env.pool.places[1][0]
        os.kill(killed["pid"], signal.SIGKILL)

    _hook(monkeypatch, "step", 250, kill_worker_1)  # mid-rollout in iteration 2 (200 steps each)
    run_dir = _train(tmp_path, "killed", [*RAY, "env_options.ray_granularity=step",
                                          "env_options.ray_compiled_graph=true"])
    assert "pid" in killed
    assert _strip(read_metrics(run_dir)) == local_metrics
    message = capfd.readouterr().err
    assert f"ray worker 1 (pid {killed['pid']}" in message and "died" in message
    assert re.search(r"during 'step'; replayed its \d+ steps on ray worker 1 \(pid \d+, node \w+\) "
                     r"in [\d.]+ s", message)
    print(message)  # quoted in the closing note (pytest -s shows it)


MARKER = {"path": "", "test_pid": os.getpid()}
"""Where the self-killing slice leaves its mark (set by the test; travels with the function)."""


def _self_killing_navigation(num_envs, **options):
    """Navigation2D's engine, except that the first slice, on a Ray worker, to reach its 250th
    step (mid-episode in iteration 2) kills its own process with SIGKILL, once."""
    env = get_family("Navigation2D").make_vector_env(num_envs, **options)
    step, count = env.step, {"steps": 0}

    def stepped(actions):
        count["steps"] += 1
        if count["steps"] == 250 and os.getpid() != MARKER["test_pid"]:
            try:
                os.close(os.open(MARKER["path"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:  # another slice was first, or this is the replacement
                return step(actions)
            os.kill(os.getpid(), signal.SIGKILL)
        return step(actions)

    env.step = stepped
    return env


def test_a_worker_killed_mid_episode_is_replaced_and_the_episode_rerun(cluster, tmp_path, capfd):
    """Granularity episode: a worker dies (SIGKILL) in the middle of the episode it runs; it is
    replaced, its slice rebuilt and the episode run again from the same copy of the policy, and
    the run's metrics equal the local engine's."""
    import dataclasses

    from metarl.tasks import register_family

    MARKER["path"] = str(tmp_path / "a-worker-killed-itself")
    register_family(dataclasses.replace(get_family("Navigation2D"), name="SelfKillingNavigation",
                                        gym_id=None, make_env=None,
                                        make_vector_env=_self_killing_navigation))
    family = ["env=SelfKillingNavigation"]
    local = _strip(read_metrics(_train(tmp_path, "local", family)))
    run_dir = _train(tmp_path, "killed", [*family, *RAY])
    assert os.path.exists(MARKER["path"]), "a worker killed itself"
    assert _strip(read_metrics(run_dir)) == local
    message = capfd.readouterr().err
    assert re.search(r"ray worker \d \(pid \d+, node \w+\) died \(The actor is dead because its "
                     r"worker process has died\) during 'episode'; rebuilt its slice on ray worker "
                     r"\d \(pid \d+, node \w+\) in [\d.]+ s, to run the episode again", message), message
    print(message)


def test_compiled_steps_equal_ordinary_actor_calls(cluster):
    """Steps go through the pool's compiled graph (on both nodes); ordinary calls
    (``ray_compiled_graph=False``) give the same numbers, bit for bit, and so does the
    in-process engine."""
    family = get_family("PointRobot-Dense")
    tasks = family.sample_tasks(np.random.default_rng(3), 6)
    records = []
    for engine, options in (("serial", {}), ("ray", {"num_workers": 2, "ray_compiled_graph": True}),
                            ("ray", {"num_workers": 2, "ray_compiled_graph": False})):
        env = build_vector_env(family, 6, seed=4, engine=engine, **options)
        env.set_tasks(tasks)
        rng = np.random.default_rng(0)
        record = [env.reset()]
        if engine == "ray":
            assert (env.pool.current_graph() is not None) == options["ray_compiled_graph"]
        for _ in range(30):
            observations, rewards, terminated, truncated, infos = env.step(
                rng.uniform(-1, 1, (6, env.action_dim)))
            record += [observations, rewards, terminated, truncated, *(infos[k] for k in sorted(infos))]
        env.close()
        records.append(record)
    # A rollout to the end of its episodes tears the graph down (idle actors would poll).
    env = build_vector_env(family, 2, engine="ray", num_workers=2, ray_compiled_graph=True)
    env.set_tasks(tasks[:2])
    env.reset()
    assert env.pool.current_graph() is not None
    for _ in range(env.max_episode_steps):
        env.step(np.zeros((2, env.action_dim)))
    assert env.pool.current_graph() is None
    env.close()
    for other in records[1:]:
        assert len(other) == len(records[0])
        for a, b in zip(records[0], other):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(MetaRLError, match=r"ray_compiled_graph must be true or false \(unset: auto\); got 'no'"):
        build_vector_env(family, 2, engine="ray", ray_compiled_graph="no")
    # Unset: compiled where episodes are long enough to repay it and the driver has a core no
    # actor holds (not here: the head's one CPU holds a worker).
    assert compile_pays(200, 1.0) and compile_pays(500, 3.0)
    assert not compile_pays(199, 4.0) and not compile_pays(500, 0.0) and not compile_pays(500, 0.5)
    for name in ("Navigation2D", "HalfCheetahVel-MAML"):
        env = build_vector_env(get_family(name), 2, engine="ray", num_workers=2)
        assert env.pool.driver_node_cpus() == 1.0 and env.pool.cpus_on_driver_node() == 1.0
        assert env.compiled_graph is False, name
        env.close()


def test_episodes_on_workers_equal_a_local_collection(cluster, monkeypatch):
    """Episodes run on the workers (the default granularity) give the local collection's
    trajectories bit for bit, and leave the driver's actor where a local collection leaves it
    (RL²'s memory across two episodes of a trial, the generator's draws), also when the slices'
    episodes end at different steps (Hopper falls: the early slice is stepped on)."""
    from metarl.agents.rl2 import RL2Config, RecurrentActorCritic, TrialActor
    from metarl.rollout import collect

    family = get_family("HopperRandParams")
    tasks = family.sample_tasks(np.random.default_rng(1), 6)
    commands = []
    original = RayVectorEnv._gather

    def gather(self, command, args):
        commands.append(command)
        return original(self, command, args)

    monkeypatch.setattr(RayVectorEnv, "_gather", gather)
    results = []
    for engine, options in (("serial", {}), ("ray", {"num_workers": 2})):
        env = build_vector_env(family, 6, seed=2, engine=engine, **options)
        env.set_tasks(tasks)
        generator = torch.Generator().manual_seed(5)
        config = RL2Config(hidden_size=8, head_sizes=(8,))
        network = RecurrentActorCritic(env.observation_dim + env.action_dim + 2, env.action_dim,
                                       config=config, generator=generator)
        actor = TrialActor(network, num_envs=6, action_low=env.action_low,
                           action_high=env.action_high, generator=generator)
        episodes = []
        for episode in range(2):
            actor.start_episode()
            episodes.append(collect(env, actor, reset_seed=10 + episode))
        env.close()
        results.append((episodes, actor.hidden.clone(), generator.get_state()))
    (local, local_hidden, local_state), (remote, remote_hidden, remote_state) = results
    assert commands.count("episode") == 2 and "step" not in commands
    assert "extend" in commands, "the slices' episodes ended at different steps"
    for a, b in zip(local, remote):
        assert a.num_steps == b.num_steps < family.max_episode_steps
        for name in ("observations", "actions", "rewards", "next_observations", "terminated",
                     "truncated", "mask"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
        assert a.infos.keys() == b.infos.keys()
        for key in a.infos:
            torch.testing.assert_close(a.infos[key], b.infos[key], rtol=0, atol=0)
    torch.testing.assert_close(local_hidden, remote_hidden, rtol=0, atol=0)
    assert torch.equal(local_state, remote_state)


class _BatchMeanActor:
    """Acts on the sum of the batch's positions: its rows depend on each other."""

    def act(self, observations):
        spread = 0.1 * torch.arange(len(observations), dtype=torch.float32)[:, None].expand(-1, 2)
        return (spread - observations[:, :2].sum(0)).clamp(-1, 1)


class _Uniform:
    """Uniform actions from its own generator (a plain actor the workers can run)."""

    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def act(self, observations):
        return torch.rand((len(observations), 2), generator=self.generator) * 2 - 1


class _LockedActor:
    """Holds a lock: it cannot be copied to the workers."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.generator = torch.Generator().manual_seed(0)

    def act(self, observations):
        with self.lock:
            return torch.rand((len(observations), 2), generator=self.generator) * 2 - 1


def test_actors_the_workers_cannot_run_are_clear(cluster, capfd):
    """An actor whose rows depend on each other stops with the option that works; one that
    cannot be copied is stepped one call per step (said once on stderr), with the same numbers."""
    from metarl.rollout import collect

    family = get_family("Navigation2D")
    tasks = family.sample_tasks(np.random.default_rng(0), 4)
    env = build_vector_env(family, 4, engine="ray", num_workers=2)
    env.set_tasks(tasks)
    with pytest.raises(MetaRLError, match=r"the actor picked other actions at step 1 than its copy "
                       r"on the workers .*_BatchMeanActor's actions depend on other sub-envs' rows, "
                       r"which episodes on workers cannot reproduce; set env_options.ray_granularity=step"):
        collect(env, _BatchMeanActor())
    trajectories = [collect(env, _LockedActor(), reset_seed=3) for _ in range(2)]
    env.close()
    assert capfd.readouterr().err.count("ray workers step _LockedActor one call per step") == 1
    serial = build_vector_env(family, 4, engine="serial")
    serial.set_tasks(tasks)
    torch.testing.assert_close(collect(serial, _LockedActor(), reset_seed=3).observations,
                               trajectories[0].observations, rtol=0, atol=0)


def test_an_exception_in_a_worker_is_a_clear_error(cluster):
    env = build_vector_env(get_family("HalfCheetahDir"), 4, engine="ray", num_workers=2)
    with pytest.raises(MetaRLError, match=r"ray worker 0 \(pid \d+, node \w+\) failed during "
                       r"'set_tasks': KeyError"):
        env.set_tasks([{"speed": 1.0}] * 4)  # HalfCheetahDir tasks have a "direction"


@pytest.mark.parametrize("mode", ["ordinary-calls", "compiled-graph", "episodes"])
def test_a_worker_that_stops_answering_times_out(cluster, mode):
    from metarl.rollout import collect

    family = get_family("Navigation2D")
    env = build_vector_env(family, 4, engine="ray", num_workers=2, timeout_s=1.0,
                           ray_compiled_graph=mode == "compiled-graph")
    env.set_tasks(family.sample_tasks(np.random.default_rng(0), 4))
    env.reset()
    pid = env.pool.places[0][0]
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        command = "episode" if mode == "episodes" else "step"
        with pytest.raises(MetaRLError, match=rf"ray worker 0 .* did not answer '{command}' within 1 s"):
            if mode == "episodes":
                collect(env, _Uniform())
            else:
                env.step(np.zeros((4, 2)))
        assert time.monotonic() - start < 10.0
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:  # the failed env's pool stopped its actors
            pass


def test_a_lost_node_stops_the_run_cleanly_and_resume_is_exact(cluster, tmp_path, local_metrics,
                                                              monkeypatch):
    """Last in this module: it removes the second node (and adds one back)."""
    _wait_for_free_cpus(2.0)  # the actors of the tests before it are gone
    other = [node for node in cluster.list_all_nodes() if not node.head][0]
    # The 5th episode call is in iteration 2 (iteration 1 made 2: before and after adapting).
    _hook(monkeypatch, "collect_remote", 5, lambda env: cluster.remove_node(other))
    options = [*RAY, "env_options.ray_restart_timeout_s=3"]
    start = time.monotonic()
    with pytest.raises(MetaRLError, match=r"ray worker \d could not be placed within 3 s \(replacing "
                       r"a worker that died .*\): lower env_options.num_workers or add nodes"):
        _train(tmp_path, "lost", options)
    assert time.monotonic() - start < 60.0
    print(f"lost node: the run stopped {time.monotonic() - start:.1f} s after it started")
    run_dir = tmp_path / "lost"
    assert latest_checkpoint(run_dir).name == "iteration_000001.pt"  # intact, nothing newer
    monkeypatch.undo()
    cluster.add_node(num_cpus=1)
    config = load_config(run_dir / "config.yaml")
    train(config, resume_from=run_dir, quiet=True)
    assert _strip(read_metrics(run_dir)) == local_metrics


def test_a_local_ray_started_by_metarl_listens_on_loopback_only():
    """In a fresh process (the cluster above is this process's Ray): every socket the local Ray
    opens listens on 127.0.0.1, even when the caller imported Ray first."""
    code = """
import ray
from metarl.envs.ray_workers import connect

def listening():
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                found.add(fields[1])
    return found

before = listening()
connect(None)
new = listening() - before
assert new, "Ray opened no listening socket"
loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
assert {address.split(":")[0] for address in new} <= loopback, new
assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
assert ray.cluster_resources()["CPU"] == float(__import__("os").cpu_count())
ray.shutdown()
print("loopback only:", len(new), "sockets")
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loopback only" in result.stdout
