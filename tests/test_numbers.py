"""Numbers as researchers write them (issue 16), and a property test: whatever keys and values
reach the config loader or the command line, the answer is a valid config or one clean line."""

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metarl.train
from metarl.cli import main
from metarl.config import TrainConfig, agent_config, load_config, to_dict
from metarl.tasks import MetaRLError


@pytest.mark.parametrize("text, value", [("3e-4", 3e-4), ("1e8", 1e8), ("-2.5E-3", -2.5e-3),
                                         ("1E+2", 100.0), (".5", 0.5), ("2", 2.0)])
def test_float_keys_accept_numbers_as_written_on_the_command_line_and_in_yaml(tmp_path, text, value):
    config = load_config(None, ["agent=rl2", f"agent_options.learning_rate={text}"])
    assert agent_config(config).learning_rate == value
    # config.yaml records the number, not the text
    assert to_dict(config)["agent_options"]["learning_rate"] == value
    path = tmp_path / "config.yaml"
    path.write_text(f"agent: rl2\nagent_options:\n  learning_rate: {text}\n")
    assert agent_config(load_config(path)).learning_rate == value


@pytest.mark.parametrize("text", ["1e3", "2.5", "1.0"])
def test_int_keys_reject_floats_in_one_line(text):
    with pytest.raises(MetaRLError, match=f"config key 'seed': expected int, got '?{text}'?$"):
        load_config(None, [f"seed={text}"])


def test_float_keys_reject_text_that_is_not_a_number():
    with pytest.raises(MetaRLError, match="config key 'agent_options.inner_lr': expected float, got '3e'"):
        load_config(None, ["agent_options.inner_lr=3e"])


# ------------------------------------------------------------------------- property tests
KNOWN_KEYS = ["env", "agent", "seed", "device", "num_iterations", "checkpoint_interval", "run_dir",
              "torch_threads", "progress", "evaluation", "evaluation.interval", "evaluation.num_tasks",
              "env_options", "agent_options", "agent_options.inner_lr", "agent_options.hidden_sizes",
              "agent_options.meta_batch_size", "agent_options.learning_rate", "evaluation.num_stages"]
keys = st.one_of(st.sampled_from(KNOWN_KEYS),
                 st.from_regex(r"[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,8}){0,2}", fullmatch=True),
                 st.text(max_size=12))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(["3e-4", "1e8", "-2.5E-3", "1e3", "2.5", "rl2", "pearl", "maml_trpo",
                                     "PointRobot-Dense", "cpu", "[16, 16]", "{a: 1}", "nan", ".inf"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(keys, st.integers()), inner, max_size=3)),
    max_leaves=6)


def assert_clean(error: MetaRLError) -> None:
    assert "\n" not in str(error) and str(error), repr(str(error))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(keys, values), max_size=4))
def test_any_overrides_give_a_config_or_one_line_error(pairs):
    overrides = []
    for key, value in pairs:
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        overrides.append(f"{key}={text.removesuffix('...').strip()}")
    try:
        assert isinstance(load_config(None, overrides), TrainConfig)
    except MetaRLError as error:
        assert_clean(error)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(values, st.dictionaries(keys, values, max_size=5)))
def test_any_yaml_file_gives_a_config_or_one_line_error(tmp_path, tree):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    try:
        assert isinstance(load_config(path), TrainConfig)
    except MetaRLError as error:
        assert_clean(error)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=20), st.tuples(keys, scalars).map(lambda kv: f"{kv[0]}={kv[1]}")),
                max_size=4))
def test_the_command_line_never_shows_a_traceback(monkeypatch, capsys, args):
    """``metarl train ARGS``: exit 0 with a valid config (training itself replaced by a stand-in
    here) or exit 2 with one line on stderr; any other exception fails the test."""
    seen = []
    monkeypatch.setattr(metarl.train, "train", lambda config, **_: seen.append(config) or "RUN_DIR")
    capsys.readouterr()
    status = main(["train", *args])
    err = capsys.readouterr().err
    if status == 0:
        assert len(seen) == 1 and isinstance(seen[0], TrainConfig)
    else:
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err

