"""A self-documenting CLI: ``metarl train --help`` lists every key, ``metarl list --configs``
every shipped config's budget, computed by the agent's own ``budget``."""

import math
from dataclasses import dataclass, fields

import pytest

from metarl.cli import main
from metarl.config import EvaluationConfig, TrainConfig, load_config
from metarl.agents.maml_trpo import MAMLTRPOConfig
from metarl.config_help import field_docs, first_sentence
from metarl.registry import get_agent_spec, list_agents
from metarl.tasks import get_family
from metarl.train import train


@dataclass(frozen=True)
class _Documented:
    plain: int = 1
    """First sentence, e.g. with an abbreviation.  Second sentence."""
    undocumented: float = 2.0
    listed: tuple[int, ...] = (3,)
    """Spans
    two lines (PPO eq. 7)."""


def test_field_docs_are_the_attribute_docstrings():
    docs = field_docs(_Documented)
    assert set(docs) == {"plain", "listed"}
    assert first_sentence(docs["plain"]) == "First sentence, e.g. with an abbreviation."
    assert first_sentence(docs["listed"]) == "Spans two lines (PPO eq. 7)."


def _key_lines(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and
            line.split() and ("." in line.split()[0] or line.split()[0] in {f.name for f in fields(TrainConfig)})}


def test_train_help_lists_every_key_with_type_default_and_doc(capsys):
    assert main(["train", "--help"]) == 0
    lines = _key_lines(capsys.readouterr().out)
    spec = get_agent_spec("maml_trpo")
    expected = [(f.name, TrainConfig) for f in fields(TrainConfig) if f.name not in ("evaluation", "agent_options")]
    expected += [(f"evaluation.{f.name}", EvaluationConfig) for f in fields(EvaluationConfig)]
    expected += [(f"agent_options.{f.name}", spec.config_class) for f in fields(spec.config_class)]
    for key, cls in expected:
        assert key in lines, key
        doc = field_docs(cls).get(key.split(".")[-1])
        if doc:
            assert first_sentence(doc) in lines[key], (key, lines[key])
    assert lines["num_iterations"].split()[1:3] == ["int", str(TrainConfig().num_iterations)]
    assert lines["agent_options.inner_lr"].split()[1:3] == ["float", str(MAMLTRPOConfig().inner_lr)]


def test_train_help_with_a_config_shows_its_agent_and_values(capsys):
    assert main(["train", "rl2_navigation", "seed=4", "--help"]) == 0
    lines = _key_lines(capsys.readouterr().out)
    assert lines["num_iterations"].split()[1:3] == ["int", "40"]
    assert f"(default: {TrainConfig().num_iterations})" in lines["num_iterations"]
    assert lines["seed"].split()[1:3] == ["int", "4"]
    assert "agent_options.trials_per_task" in lines and "agent_options.inner_lr" not in lines
    assert lines["agent_options.head_sizes"].split()[1:3] == ["tuple[int,", "...]"]


def test_train_help_with_a_bad_config_is_a_one_line_error(capsys):
    assert main(["train", "bogus=1", "--help"]) == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err


def test_list_configs_shows_family_agent_and_budget(capsys):
    assert main(["list", "--configs"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["maml_trpo_navigation"])
    # 100 iterations x 20 tasks x 20 episodes x (1 inner + 1 outer batch) x horizon 100
    assert row.split()[1:6] == ["Navigation2D", "maml_trpo", "100", "8M", "100"]
    assert "not measured" not in row


TINY_AGENTS = {
    "maml_trpo": ["meta_batch_size=2", "episodes_per_task=2", "num_inner_steps=2", "hidden_sizes=[8]"],
    "rl2": ["meta_batch_size=2", "trials_per_task=2", "episodes_per_trial=3", "num_epochs=1",
            "num_minibatches=2", "hidden_size=8", "head_sizes=[8]"],
    "pearl": ["meta_batch_size=3", "num_tasks_sample=2", "num_initial_steps=30", "num_steps_prior=20",
              "num_steps_posterior=10", "num_extra_rl_steps_posterior=20", "num_train_steps_per_itr=2",
              "batch_size=8", "embedding_batch_size=8", "hidden_sizes=[8]", "encoder_hidden_sizes=[8]"],
    "random": ["meta_batch_size=2", "episodes_per_task=3"],
    "multitask_trpo": ["meta_batch_size=2", "episodes_per_task=2", "hidden_sizes=[8]"],
    "oracle_trpo": ["meta_batch_size=2", "episodes_per_task=2", "hidden_sizes=[8]"],
    "reptile": ["meta_batch_size=2", "episodes_per_task=2", "num_inner_steps=2", "hidden_sizes=[8]"],
}


def test_every_agent_states_a_budget():
    assert {spec.name for spec in list_agents() if spec.budget is not None} >= set(TINY_AGENTS)


@pytest.mark.parametrize("agent", sorted(TINY_AGENTS))
def test_budget_is_the_env_steps_a_run_takes(agent, tmp_path):
    """PointRobot-Dense never terminates early, so the budget is exact, except PEARL's initial
    collection, which a task drawn twice gets once."""
    config = load_config(None, [
        "env=PointRobot-Dense", f"agent={agent}", "num_iterations=2", "progress=false",
        "evaluation.interval=0", "evaluation.num_tasks=1", "evaluation.num_stages=1",
        "evaluation.episodes_per_stage=1", f"run_dir={tmp_path}",
        *[f"agent_options.{option}" for option in TINY_AGENTS[agent]]])
    family = get_family(config.env)
    spec = get_agent_spec(agent)
    from metarl.config import agent_config
    from metarl.logger import read_metrics

    budget = spec.budget(agent_config(config), family, config.num_iterations)
    train(config, quiet=True)
    taken = int(read_metrics(tmp_path)[-1]["train/env_steps"])
    if agent == "pearl":
        initial = math.ceil(30 / family.max_episode_steps) * family.max_episode_steps
        assert taken <= budget.env_steps and (budget.env_steps - taken) % initial == 0
        assert budget.gradient_steps == 4
    else:
        assert taken == budget.env_steps
