from pathlib import Path

import pytest

from metarl.config import TrainConfig, agent_config, load_config, parse_override, read_yaml
from metarl.envs import metaworld as metaworld_adapter
from metarl.tasks import MetaRLError
from metarl.train import build_run


def test_defaults_are_the_embedded_maml_navigation_run():
    config = load_config()
    assert config == TrainConfig()
    assert (config.env, config.agent) == ("Navigation2D", "maml_trpo")


def test_overrides_are_typed_and_nested():
    config = load_config(None, ["seed=3", "evaluation.interval=5",
                                "agent_options.inner_lr=0.05", "agent_options.hidden_sizes=[32,32]"])
    assert config.seed == 3 and config.evaluation.interval == 5
    options = agent_config(config)
    assert options.inner_lr == 0.05 and options.hidden_sizes == (32, 32)


@pytest.mark.parametrize("override, message", [
    ("sed=3", "unknown config key 'sed'; accepted: agent, agent_options"),
    ("evaluation.intervall=3", "unknown config key 'evaluation.intervall'"),
    ("agent_options.inner_learning_rate=1", "unknown config key 'agent_options.inner_learning_rate'"),
    ("seed=abc", "config key 'seed': expected int"),
    ("env=Navigation3D", "unknown env 'Navigation3D', neither an RL task family nor a supervised task source; accepted:"),
    ("agent=ppo", "unknown agent 'ppo'; accepted:"),
    ("device=tpu", "accepted: auto, cpu, cuda"),
])
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(MetaRLError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, [override])


@pytest.mark.parametrize("text", ["seed", "=3", "a..b=1", "x-y=2"])
def test_malformed_overrides(text):
    with pytest.raises(MetaRLError, match="override"):
        parse_override(text)


def test_yaml_file_and_unknown_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 7\nagent_options:\n  num_inner_steps: 2\n")
    config = load_config(path, ["seed=8"])
    assert config.seed == 8 and agent_config(config).num_inner_steps == 2
    with pytest.raises(MetaRLError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("- a list\n")
    with pytest.raises(MetaRLError, match="mapping"):
        load_config(path)


SHIPPED_CONFIGS = sorted(
    path.stem for path in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")
)


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_shipped_config_builds_its_agent_and_envs(name):
    """Each YAML in configs/ loads by name, names a registered family and agent, and its
    agent_options build that agent on that family (typos in a key or value fail here).
    A Meta-World config is checked where the extra is installed (CI's second environment)."""
    env = read_yaml(name).get("env", "")
    if metaworld_adapter.is_metaworld_name(env) and not metaworld_adapter.available():
        pytest.skip(f"{name} trains on {env}: needs the metaworld extra")
    config = load_config(name)
    run = build_run(config)
    try:
        assert run.task_sampler.family.name == config.env
        assert run.agent.meta_batch_size >= 1
    finally:
        run.close()
