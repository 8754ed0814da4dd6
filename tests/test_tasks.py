import json

import numpy as np
import pytest

from metarl.tasks import MetaRLError, TaskSampler, get_family, list_families


def test_sampling_is_reproducible_from_the_seed():
    family = get_family("Navigation2D")
    a, b, c = TaskSampler(family, 3), TaskSampler(family, 3), TaskSampler(family, 4)
    assert a.held_out() == b.held_out()
    assert a.sample_train(5) == b.sample_train(5)
    assert a.held_out() != c.held_out()


def test_test_split_does_not_depend_on_training_draws():
    family = get_family("Navigation2D")
    a = TaskSampler(family, 0)
    before = a.held_out()
    a.sample_train(100)
    assert a.held_out() == before
    assert len(before) == 40
    train_goals = {tuple(t["goal"]) for t in a.sample_train(200)}
    assert not train_goals & {tuple(t["goal"]) for t in before}


def test_sampler_state_round_trip():
    family = get_family("Navigation2D")
    a = TaskSampler(family, 0)
    a.sample_train(3)
    state = a.state_dict()
    expected = a.sample_train(4)
    b = TaskSampler(family, 0)
    b.load_state_dict(state)
    assert b.sample_train(4) == expected


def test_ood_split_is_outside_training_range_and_stable():
    sampler = TaskSampler(get_family("Navigation2D"), 0)
    ood = sampler.held_out("ood")
    assert ood == sampler.held_out("ood")
    assert all(np.max(np.abs(t["goal"])) > 0.5 for t in ood)
    with pytest.raises(MetaRLError, match="accepted: test, ood"):
        sampler.held_out("validation")


def test_unknown_family_names_the_accepted_ones():
    with pytest.raises(MetaRLError, match="Navigation2D"):
        get_family("Navigation3D")
    assert "Navigation2D" in [f.name for f in list_families()]


def test_split_is_written_to_the_run_directory(tmp_path):
    sampler = TaskSampler(get_family("Navigation2D"), 0)
    sampler.write(tmp_path / "tasks.json")
    data = json.loads((tmp_path / "tasks.json").read_text())
    assert data["family"] == "Navigation2D" and data["test_tasks"] == sampler.held_out()
