"""The supervised learners run through the same CLI, config, checkpoints and logs as the RL
agents: ``metarl train`` a tiny run, ``metarl evaluate`` it, ``metarl compare`` two, resume
exactly, and every shipped supervised config loads with a budget."""

import json

import pytest
import torch

from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.config import load_config
from metarl.logger import read_metrics
from metarl.runs import kind_of
from metarl.supervised.glyphs import generate_glyphs
from metarl.tasks import MetaRLError
from metarl.train import train

TINY_SINUSOID = ["env=Sinusoid", "num_iterations=6", "checkpoint_interval=3", "evaluation.interval=3",
                 "evaluation.num_tasks=8", "evaluation.num_stages=2", "env_options.num_shots=5",
                 "env_options.num_query=5", "progress=false"]


def test_train_evaluate_compare_round_trip(tmp_path, capsys):
    maml, pretrained = tmp_path / "maml", tmp_path / "pretrained"
    assert main(["train", *TINY_SINUSOID, "agent=maml", f"run_dir={maml}"]) == 0
    assert main(["train", *TINY_SINUSOID, "agent=pretrained", f"run_dir={pretrained}"]) == 0
    metrics = read_metrics(maml)
    assert [m["iteration"] for m in metrics] == list(range(1, 7))
    # The x-axis counts labelled examples: 25 tasks x (5 support + 5 query) per iteration.
    assert metrics[-1]["train/examples"] == 6 * 25 * 10
    assert {"eval/mse_stage_0", "eval/mse_stage_2", "loss/query"} <= set(metrics[-1])
    assert sorted(p.name for p in (maml / "checkpoints").iterdir()) == ["iteration_000003.pt", "iteration_000006.pt"]
    assert json.loads((maml / "tasks.json").read_text())["family"] == "Sinusoid"
    capsys.readouterr()

    assert main(["evaluate", str(maml)]) == 0
    out = capsys.readouterr().out
    assert "mean mse" in out and "stage k: after k gradient steps on the support set (5-shot)" in out
    saved = json.loads((maml / "eval.json").read_text())
    assert saved["metric"] == "mse" and len(saved["stages"]) == 3 and saved["train_examples"] == 1500
    # The evaluation at the end of training and 'metarl evaluate' are the same numbers.
    assert saved["stages"][-1]["mse"]["mean"] == pytest.approx(metrics[-1]["eval/mse_stage_2"])

    output = tmp_path / "compare.png"
    assert main(["compare", str(maml), str(pretrained), "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "Sinusoid: held-out mse by adaptation stage" in out
    assert "maml seed 0" in out and "pretrained seed 0" in out and "lower is better" in out
    assert output.is_file() and json.loads(output.with_suffix(".json").read_text())


def test_resume_continues_exactly(tmp_path):
    whole = train(load_config(None, [*TINY_SINUSOID, "agent=reptile", f"run_dir={tmp_path / 'whole'}"]), quiet=True)
    part = load_config(None, [*TINY_SINUSOID, "agent=reptile", "num_iterations=3", f"run_dir={tmp_path / 'part'}"])
    train(part, quiet=True)
    resumed = train(load_config(part.run_dir + "/config.yaml", ["num_iterations=6"], run_config=True),
                    resume_from=tmp_path / "part", quiet=True)
    a = load_checkpoint(whole / "checkpoints" / "iteration_000006.pt")
    b = load_checkpoint(resumed / "checkpoints" / "iteration_000006.pt")
    for name, value in a["agent"]["model"].items():
        assert torch.equal(value, b["agent"]["model"][name]), name
    assert a["sampler"]["examples"] == b["sampler"]["examples"] and a["sampler"]["rng"] == b["sampler"]["rng"]
    assert read_metrics(whole)[-1]["eval/mse_stage_2"] == read_metrics(resumed)[-1]["eval/mse_stage_2"]


def test_metric_based_learner_has_one_stage_and_accuracy(tmp_path, capsys):
    root = generate_glyphs(tmp_path / "glyphs", num_background_alphabets=2, num_evaluation_alphabets=2,
                           characters_per_alphabet=5, num_drawers=8)
    run = tmp_path / "protonet"
    assert main(["train", "env=Glyphs", "agent=protonet", f"env_options.path={root}", "env_options.num_ways=3",
                 "env_options.num_shots=1", "env_options.num_query=2", "num_iterations=2",
                 "evaluation.num_tasks=5", "agent_options.channels=4", "progress=false", f"run_dir={run}"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "mean accuracy" in out and "one stage: the query set classified from the support set (1-shot)" in out
    result = json.loads((run / "eval.json").read_text())
    assert result["metric"] == "accuracy" and len(result["stages"]) == 1


def test_runs_measured_differently_are_not_compared(tmp_path, capsys):
    from metarl.evaluate import compare_table

    rl = {"adaptation_unit": "gradient step", "num_tasks": 1, "stages": []}
    supervised = {**rl, "metric": "mse"}
    with pytest.raises(MetaRLError, match="different metrics"):
        compare_table([("a", rl), ("b", supervised)])


@pytest.mark.parametrize("override, message", [
    ("agent=protonet", "learner 'protonet' classifies; source 'Sinusoid' is regression"),
    ("agent=maml_trpo", "unknown learner 'maml_trpo'; accepted:"),
    ("env_options.num_wayz=5", "unknown config key 'env_options.num_wayz' for source 'Sinusoid'"),
    ("env_options.num_shots=0", "env_options.num_shots and num_query: 0, 5; accepted: >= 1 each"),
    ("agent_options.inner_lrr=1", "unknown config key 'agent_options.inner_lrr'"),
])
def test_bad_supervised_configs_are_named_before_a_run_starts(override, message):
    with pytest.raises(MetaRLError, match=message):
        load_config(None, [*TINY_SINUSOID, "agent=maml", override])


def test_every_shipped_supervised_config_loads_with_a_budget(capsys):
    assert main(["list", "--configs"]) == 0
    rows = {line.split()[0]: line.split()[1:6] for line in capsys.readouterr().out.splitlines()[2:]}
    # 3000 iterations x 25 tasks x (10 support + 10 query points)
    assert rows["maml_sinusoid"] == ["Sinusoid", "maml", "3000", "1.5M", "3k"]
    # 100 iterations x 4 tasks x 5 ways x (1 + 5) images
    assert rows["protonet_glyphs_5way"] == ["Glyphs", "protonet", "100", "12k", "100"]
    for name in ("fomaml_sinusoid", "reptile_sinusoid", "pretrained_sinusoid", "matching_glyphs_5way",
                 "relation_glyphs_5way", "maml_glyphs_5way"):
        assert kind_of(rows[name][0]).name == "supervised", name
