"""Run directories that are safe to share and hard to damage (issue 16): checkpoints hold data
and never run code, one run per directory and one writer at a time, divergence stops cleanly,
a failed write leaves the previous checkpoint intact."""

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY
from test_pearl import TINY_PEARL
from test_rl2 import RL2_TINY
from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.cli import main
from metarl.config import load_config
from metarl.logger import read_metrics
from metarl.registry import get_agent_spec
from metarl.run_dir import locked_run_dir
from metarl.tasks import MetaRLError
from metarl.train import train

SMALL = [*TINY, "num_iterations=2", "agent_options.meta_batch_size=2",
         "agent_options.episodes_per_task=2", "evaluation.num_tasks=2", "evaluation.episodes_per_stage=2"]
"""A two-iteration MAML run (about a second)."""


def small_run(run_dir, extra=()):
    return train(load_config(None, [*SMALL, f"run_dir={run_dir}", *extra]), quiet=True)


def strip(metrics):
    """Metrics without the wall-clock ones."""
    return [{k: v for k, v in m.items() if not k.startswith("time/") and "per_second" not in k}
            for m in metrics]


# ------------------------------------------------------------------ checkpoints hold data
class RunsCode:
    """What a hostile checkpoint could carry: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    return small_run(tmp_path_factory.mktemp("shared") / "run")


def test_a_checkpoint_that_would_run_code_is_refused_by_evaluate_resume_and_compare(
        shared_run, tmp_path, capsys):
    copied = shutil.copytree(shared_run, tmp_path / "copied")
    path = latest_checkpoint(copied)
    marker = tmp_path / "code_ran"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "extra": RunsCode(marker)}, path)
    for argv in (["evaluate", str(copied)],
                 ["train", "--resume", str(copied), "num_iterations=3"],
                 ["compare", str(copied), "--output", str(tmp_path / "compare.png")]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"error: checkpoint {str(path)!r} holds more than tensors and plain data"), err
        assert "GLOBAL posix.system" in err and "it was not loaded" in err
        assert not marker.exists(), argv
    assert len(read_metrics(copied)) == 2  # the refused resume wrote nothing


def test_checkpoints_of_every_shipped_state_load_as_plain_data(shared_run):
    """Parameters, optimiser states, numpy bit-generator states (128-bit ints), torch generator
    states: all load under weights_only (the agents' own tests cover RL², PEARL and the baselines
    through load_run and --resume, which use the same loader)."""
    state = load_checkpoint(latest_checkpoint(shared_run))
    assert state["iteration"] == 2
    assert isinstance(state["task_sampler"]["rng"]["state"]["state"], int)
    assert state["task_sampler"]["rng"]["state"]["state"] > 2 ** 64
    assert state["agent"]["generator"].dtype == torch.uint8


def test_a_damaged_checkpoint_is_one_line_naming_it(shared_run, tmp_path):
    copied = shutil.copytree(shared_run, tmp_path / "copied")
    path = latest_checkpoint(copied)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MetaRLError, match=f"cannot read checkpoint {str(path)!r}: ") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


# ------------------------------------------------------- one run per directory, one writer
def test_training_into_a_directory_that_holds_a_run_is_refused(shared_run, tmp_path, capsys):
    copied = shutil.copytree(shared_run, tmp_path / "copied")
    before = (copied / "metrics.jsonl").read_text()
    assert main(["train", *SMALL, f"run_dir={copied}", "agent_options.inner_lr=0.37"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: run directory {str(copied)!r} already holds a run; continue it with "
                   f"'metarl train --resume {copied}', give a fresh run_dir=..., or pass --overwrite "
                   "to delete it and start again\n")
    assert (copied / "metrics.jsonl").read_text() == before
    assert "inner_lr: 0.37" not in (copied / "config.yaml").read_text()


def test_overwrite_replaces_the_old_run_without_mixing_files(shared_run, tmp_path):
    copied = shutil.copytree(shared_run, tmp_path / "copied")
    (copied / "eval.json").write_text("{}")  # a file only the old run has
    (copied / "checkpoints" / "iteration_000009.pt").write_bytes(b"old")
    old_events = set(copied.glob("events.out.tfevents.*"))
    train(load_config(None, [*SMALL, f"run_dir={copied}", "num_iterations=1"]), quiet=True, overwrite=True)
    assert [m["iteration"] for m in read_metrics(copied)] == [1]
    assert sorted(p.name for p in (copied / "checkpoints").iterdir()) == ["iteration_000001.pt"]
    assert not (copied / "eval.json").exists()
    assert old_events and not old_events & set(copied.glob("events.out.tfevents.*"))


def metarl_process(*args, preamble=""):
    """``metarl ARGS`` in a fresh interpreter (after ``preamble``), output captured."""
    code = f"import sys\n{preamble}\nfrom metarl.cli import main\nsys.exit(main({list(args)!r}))"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, err


def test_a_second_writer_is_refused_naming_the_holder_pid(shared_run, tmp_path):
    copied = shutil.copytree(shared_run, tmp_path / "copied")
    before = (copied / "metrics.jsonl").read_text()
    with locked_run_dir(copied):  # this test process is the first writer
        for args in (["train", "--resume", str(copied), "num_iterations=3"],
                     ["train", *SMALL, f"run_dir={copied}", "--overwrite"],
                     ["evaluate", str(copied)]):
            status, err = finish(metarl_process(*args))
            assert status == 2, err
            assert err == (f"error: run directory {str(copied)!r} is in use by process {os.getpid()}; "
                           "wait for it to finish (or stop it), or give another run_dir\n")
    assert (copied / "metrics.jsonl").read_text() == before
    assert not (copied / "eval.json").exists()
    # Released when the holder lets go: the resume now runs.
    status, err = finish(metarl_process("train", "--resume", str(copied), "num_iterations=3"))
    assert status == 0, err
    assert [m["iteration"] for m in read_metrics(copied)] == [1, 2, 3]


def test_two_train_processes_started_at_once_on_one_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    processes = [metarl_process("train", *SMALL, f"run_dir={run_dir}") for _ in range(2)]
    results = sorted(finish(p) for p in processes)
    (ok, _), (refused, err) = results
    assert (ok, refused) == (0, 2), results
    assert err.count("\n") == 1 and (" is in use by process " in err or " already holds a run" in err), err
    assert [m["iteration"] for m in read_metrics(run_dir)] == [1, 2]


def test_an_unusable_run_dir_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["train", *SMALL, f"run_dir={tmp_path / 'file' / 'run'}"]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot use run directory {str(tmp_path / 'file' / 'run')!r}: Not a directory\n")


# ----------------------------------------------------------------- divergence stops cleanly
NORMAL_LOC = "parameter 'loc' of a Normal distribution"
POOLED = [t for t in SMALL if "hidden_sizes" not in t]


@pytest.mark.parametrize("agent, overrides, quantity", [
    ("maml_trpo", [*SMALL, "agent_options.inner_lr=1e8"], NORMAL_LOC),
    ("rl2", [*RL2_TINY, "num_iterations=2", "agent_options.learning_rate=1e8"], NORMAL_LOC),
    ("pearl", [*TINY_PEARL, "num_iterations=2", "agent_options.policy_lr=1e8", "agent_options.qf_lr=1e8",
               "agent_options.context_lr=1e8"], "loss/critic (nan)"),
    # TRPO's line search rejects steps whose loss it can compute (max_kl=1e8 just never moves);
    # a step so large that the policy's mean overflows is the divergence it cannot catch.
    ("multitask_trpo", [*POOLED, "agent=multitask_trpo", "agent_options.max_kl=1e300"], NORMAL_LOC),
    ("oracle_trpo", [*POOLED, "agent=oracle_trpo", "agent_options.max_kl=1e300"], NORMAL_LOC),
])
def test_an_absurd_step_size_stops_with_one_line(tmp_path, capsys, agent, overrides, quantity):
    run_dir = tmp_path / "run"
    assert main(["train", *overrides, f"run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "[nan" not in err, err
    keys = ", ".join(f"agent_options.{key}" for key in get_agent_spec(agent).step_size_keys)
    assert err.splitlines()[-1] + "\n" == (f"error: {agent} diverged at iteration 1: {quantity} is not finite; no checkpoint was "
                   f"written; try a smaller step size ({keys}) in a fresh run_dir\n")
    assert latest_checkpoint(run_dir) is None and read_metrics(run_dir) == []


def test_divergence_keeps_the_last_good_checkpoint_and_resume_works(tmp_path, monkeypatch):
    # Four iterations: iteration 3 has no evaluation, so the parameter check itself must catch it.
    full = read_metrics(small_run(tmp_path / "full", ["num_iterations=4"]))
    from metarl.agents.maml_trpo import MAMLTRPO

    real = MAMLTRPO.train_iteration
    calls = []

    def diverging(self, tasks, sampler):
        stats = real(self, tasks, sampler)
        calls.append(1)
        if len(calls) == 3:  # the third iteration's update produced a NaN parameter
            with torch.no_grad():
                next(self.policy.parameters()).fill_(float("nan"))
        return stats

    monkeypatch.setattr(MAMLTRPO, "train_iteration", diverging)
    run_dir = tmp_path / "cut"
    with pytest.raises(MetaRLError) as info:
        small_run(run_dir, ["num_iterations=4"])
    assert str(info.value).startswith("maml_trpo diverged at iteration 3: agent state 'policy.")
    assert f"the latest checkpoint {run_dir / 'checkpoints' / 'iteration_000002.pt'} is kept" in str(info.value)
    assert latest_checkpoint(run_dir).name == "iteration_000002.pt"
    monkeypatch.setattr(MAMLTRPO, "train_iteration", real)
    train(load_config(run_dir / "config.yaml"), resume_from=run_dir, quiet=True)
    assert strip(read_metrics(run_dir)) == strip(full)


# -------------------------------------------------------------------------------- disk full
FILE_SIZE_LIMIT = """import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))"""


def test_a_failed_checkpoint_write_is_one_line_and_resume_is_exact_once_space_is_back(shared_run, tmp_path):
    full = read_metrics(small_run(tmp_path / "full", ["num_iterations=4"]))
    copied = shutil.copytree(shared_run, tmp_path / "copied")
    size = latest_checkpoint(copied).stat().st_size
    process = metarl_process("train", "--resume", str(copied), "num_iterations=4",
                             preamble=FILE_SIZE_LIMIT.format(limit=size // 2))
    status, err = finish(process)
    path = copied / "checkpoints" / "iteration_000003.pt"
    assert status == 2, err
    assert err.splitlines()[-1] == (f"error: cannot write checkpoint {str(path)!r}: File too large; the "
                                    "previous checkpoint is kept; free space and continue with --resume")
    assert "Traceback" not in err
    assert sorted(p.name for p in (copied / "checkpoints").iterdir()) == [
        "iteration_000001.pt", "iteration_000002.pt"]
    assert load_checkpoint(latest_checkpoint(copied))["iteration"] == 2
    train(load_config(copied / "config.yaml", ["num_iterations=4"]), resume_from=copied, quiet=True)
    assert strip(read_metrics(copied)) == strip(full)


def test_a_failed_metrics_write_is_one_line_naming_the_file(tmp_path):
    code = FILE_SIZE_LIMIT.format(limit=200) + f"""
from metarl.logger import Logger
from metarl.tasks import MetaRLError
logger = Logger({str(tmp_path)!r})
try:
    logger.log_scalars({{f"train/value_{{i}}": float(i) for i in range(50)}}, step=1, iteration=1)
except MetaRLError as error:
    print(error)
try:
    logger.close()
except MetaRLError as error:
    print(error)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out == (f"cannot write metrics {str(tmp_path / 'metrics.jsonl')!r}: File too large\n"
                   f"cannot finish writing logs in {str(tmp_path)!r}: File too large\n")


# ------------------------------------------------------------------ kill -9, then --resume
HANG_AFTER_ITERATION_3 = """import time
import metarl.train
log_scalars = metarl.train.Logger.log_scalars
def log_then_hang(self, *args, iteration=None, **kwargs):
    log_scalars(self, *args, iteration=iteration, **kwargs)
    if iteration == 3:  # logged, not yet checkpointed: where the kill lands
        time.sleep(600)
metarl.train.Logger.log_scalars = log_then_hang"""


@pytest.mark.parametrize("overrides", [SMALL, RL2_TINY, TINY_PEARL], ids=["maml_trpo", "rl2", "pearl"])
def test_resume_after_kill_9_reproduces_the_uninterrupted_run(tmp_path, overrides):
    overrides = [*overrides, "num_iterations=4", "checkpoint_interval=2"]
    full = read_metrics(train(load_config(None, [*overrides, f"run_dir={tmp_path / 'full'}"]), quiet=True))
    run_dir = tmp_path / "killed"
    process = metarl_process("train", *overrides, f"run_dir={run_dir}", preamble=HANG_AFTER_ITERATION_3)
    deadline = time.monotonic() + 240
    metrics = run_dir / "metrics.jsonl"
    while process.poll() is None and time.monotonic() < deadline and not (
            metrics.exists() and '"iteration": 3' in metrics.read_text()):
        time.sleep(0.05)
    process.kill()  # SIGKILL while it holds the lock, with iteration 3 logged but not checkpointed
    process.communicate()
    assert process.returncode == -9
    assert latest_checkpoint(run_dir).name == "iteration_000002.pt"
    train(load_config(run_dir / "config.yaml"), resume_from=run_dir, quiet=True)  # the lock is free again
    assert strip(read_metrics(run_dir)) == strip(full)
