"""Whole runs: smoke, determinism, exact resume."""

import json

import pytest

from conftest import TINY
from metarl.checkpoint import latest_checkpoint
from metarl.config import load_config
from metarl.logger import read_metrics
from metarl.tasks import MetaRLError
from metarl.train import evaluate_run, load_run, train


def run(tmp_path, name, extra=()):
    config = load_config(None, [*TINY, f"run_dir={tmp_path / name}", *extra])
    return train(config, quiet=True)


def test_smoke_run_writes_everything(tmp_path):
    run_dir = run(tmp_path, "a")
    for name in ("config.yaml", "versions.json", "tasks.json", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert latest_checkpoint(run_dir).name == "iteration_000003.pt"
    metrics = read_metrics(run_dir)
    assert [m["iteration"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["env_steps"] > metrics[0]["env_steps"] > 0
    assert "eval/return_stage_1" in metrics[1] and "eval/return_stage_1" not in metrics[0]
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["packages"]["torch"]


def test_same_seed_same_numbers(tmp_path):
    a, b = read_metrics(run(tmp_path, "a")), read_metrics(run(tmp_path, "b"))
    strip = lambda ms: [{k: v for k, v in m.items() if not k.startswith("time/")} for m in ms]
    assert strip(a) == strip(b)
    c = read_metrics(run(tmp_path, "c", ["seed=1"]))
    assert strip(c) != strip(a)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = read_metrics(run(tmp_path, "full"))
    short = run(tmp_path, "cut", ["num_iterations=2"])
    # Simulate an interruption after checkpoint 1: drop the later checkpoint.
    (short / "checkpoints" / "iteration_000002.pt").unlink()
    config = load_config(short / "config.yaml", ["num_iterations=3"])
    train(config, resume_from=short, quiet=True)
    resumed = read_metrics(short)
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}
    assert [m["iteration"] for m in resumed] == [1, 2, 3]
    assert [strip(m) for m in resumed] == [strip(m) for m in full]


def test_resume_with_another_config_is_refused(tmp_path):
    run_dir = run(tmp_path, "a")
    config = load_config(run_dir / "config.yaml", ["agent_options.inner_lr=0.3"])
    with pytest.raises(MetaRLError, match="checkpoint is from another config: 'agent_options'"):
        train(config, resume_from=run_dir, quiet=True)


def test_run_records_every_agent_option_and_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    """config.yaml writes the agent's defaults out too, so a later change of a default (issue 15:
    MAML-TRPO's network) cannot rebuild another agent under an old run; a run written before
    (options it was not given left out) whose default has changed since is refused, by name."""
    import yaml

    from metarl.agents.maml_trpo import MAMLTRPOConfig
    from metarl.config import to_dict

    run_dir = run(tmp_path, "a")
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())["agent_options"]
    assert set(recorded) == set(to_dict(MAMLTRPOConfig()))
    load_run(run_dir)  # the run itself loads
    # An older metarl's config.yaml, from when the default network was another: only the
    # options given, the network not among them.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["agent_options"] = {k: v for k, v in recorded.items() if k != "hidden_sizes"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(MetaRLError, match=r"does not fit the agent its config builds \(size mismatch"):
        load_run(run_dir)


def test_evaluation_is_deterministic_and_independent_of_training_streams(tmp_path):
    run_dir = run(tmp_path, "a")
    first, iteration = load_run(run_dir)
    second, _ = load_run(run_dir)
    a = evaluate_run(first, iteration=iteration)
    b = evaluate_run(second, iteration=iteration)
    assert a == b
    assert len(a["stages"]) == 2 and a["num_tasks"] == 4


def test_a_run_from_before_unit_actions_resumes_in_env_units(tmp_path):
    """A run whose config.yaml and checkpoints predate ``unit_actions`` (policies acted in the
    env's units then) resumes as it ran, not with the new default."""
    import torch
    import yaml

    from metarl.cli import main

    full = read_metrics(run(tmp_path, "full", ["unit_actions=false"]))
    old = run(tmp_path, "old", ["unit_actions=false", "num_iterations=2"])
    (old / "checkpoints" / "iteration_000002.pt").unlink()
    values = yaml.safe_load((old / "config.yaml").read_text())
    del values["unit_actions"]
    (old / "config.yaml").write_text(yaml.safe_dump(values))
    path = old / "checkpoints" / "iteration_000001.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["unit_actions"]
    torch.save(state, path)
    assert main(["train", "--resume", str(old), "num_iterations=3"]) == 0
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}
    assert [strip(m) for m in read_metrics(old)] == [strip(m) for m in full]
