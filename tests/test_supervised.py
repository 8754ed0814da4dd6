"""The supervised side: task sources (Sinusoid, the Omniglot layout, the generated glyphs), the
shared task sampler's disjoint splits, and a smoke run, determinism and adaptation rules for
every learner.  Learning itself is tested (slow) in test_learning_fewshot.py."""

import copy
import hashlib
import json

import numpy as np
import pytest
import torch

from metarl.config import build_dataclass
from metarl.supervised.adaptation import adapt, per_task
from metarl.supervised.batch import FewShotBatch, per_task_loss
from metarl.supervised.evaluate import evaluate_learner
from metarl.supervised.glyphs import generate_glyphs
from metarl.supervised.learner import GRADIENT_STEP, SUPPORT_SET, get_learner_spec, list_learners
from metarl.supervised.task_source import list_sources, make_source
from metarl.supervised.train import meta_train
from metarl.tasks import MetaRLError, TaskSampler

LEARNERS = ["maml", "fomaml", "reptile", "pretrained", "protonet", "matching", "relation"]
GRADIENT_LEARNERS = ["maml", "fomaml", "reptile", "pretrained"]
TINY_OPTIONS = {"maml": {"channels": 4, "meta_batch_size": 2, "hidden_sizes": [8]},
                "fomaml": {"channels": 4, "meta_batch_size": 2, "hidden_sizes": [8]},
                "reptile": {"channels": 4, "meta_batch_size": 2, "hidden_sizes": [8], "num_inner_steps": 2},
                "pretrained": {"channels": 4, "meta_batch_size": 2, "hidden_sizes": [8]},
                "protonet": {"channels": 4, "meta_batch_size": 2},
                "matching": {"channels": 4, "meta_batch_size": 2, "full_context_embeddings": True,
                             "fce_processing_steps": 2},
                "relation": {"channels": 4, "meta_batch_size": 2}}


@pytest.fixture(scope="module")
def glyph_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("glyphs") / "set"
    return generate_glyphs(root, num_background_alphabets=2, num_evaluation_alphabets=1,
                           characters_per_alphabet=5, num_drawers=6)


def glyphs(root, **options):
    return make_source("Glyphs", {"path": str(root), "image_size": 16, "num_test_tasks": 4, **options})


def build(name, source, seed=0, **options):
    spec = get_learner_spec(name)
    config = build_dataclass(spec.config_class, {**TINY_OPTIONS[name], **options})
    return spec.build(config, source=source, device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed))


def test_sources_and_learners_are_registered_apart_from_the_agents():
    from metarl.registry import list_agents

    assert {s.name for s in list_sources()} >= {"Sinusoid", "Omniglot", "Glyphs"}
    assert {s.name for s in list_learners()} == set(LEARNERS)
    assert "protonet" not in {a.name for a in list_agents()}


def test_metarl_list_shows_the_supervised_side_apart(capsys):
    from metarl.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rl, supervised = out.split("supervised few-shot task sources")
    assert "maml_trpo" in rl and "reptile" in rl and "protonet" not in rl
    sources, learners = supervised.split("supervised few-shot learners")
    assert "Sinusoid" in sources and "Glyphs" in sources and "Omniglot" in sources
    assert all(name in learners for name in LEARNERS)


def test_sinusoid_tasks_and_points_follow_the_paper():
    source = make_source("Sinusoid")
    tasks = source.sample_tasks(np.random.default_rng(0), 2000)
    amplitudes = np.array([t["amplitude"] for t in tasks])
    phases = np.array([t["phase"] for t in tasks])
    assert 0.1 <= amplitudes.min() and amplitudes.max() <= 5.0 and amplitudes.std() > 1.0
    assert 0.0 <= phases.min() and phases.max() <= np.pi
    batch = source.make_batch(tasks[:3], np.random.default_rng(1), 10, 7)
    assert batch.support_inputs.shape == (3, 10, 1) and batch.query_inputs.shape == (3, 7, 1)
    assert batch.support_inputs.abs().max() <= 5.0 and batch.num_classes is None
    a, p = tasks[1]["amplitude"], tasks[1]["phase"]
    torch.testing.assert_close(batch.query_targets[1], a * torch.sin(batch.query_inputs[1] - p))
    again = source.make_batch(tasks[:3], np.random.default_rng(1), 10, 7)
    assert torch.equal(batch.query_inputs, again.query_inputs)


def test_glyph_generation_is_deterministic_and_in_omniglot_layout(tmp_path, glyph_root):
    again = generate_glyphs(tmp_path / "again", num_background_alphabets=2, num_evaluation_alphabets=1,
                            characters_per_alphabet=5, num_drawers=6)

    def digest(root):
        files = sorted(root.rglob("*.png"))
        return [(str(f.relative_to(root)), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]

    assert digest(glyph_root) == digest(again)
    assert len(list((glyph_root / "images_background").glob("*/*/*.png"))) == 2 * 5 * 6
    assert len(list((glyph_root / "images_evaluation").glob("*/*/*.png"))) == 1 * 5 * 6


def test_classification_splits_are_disjoint_and_saved(tmp_path, glyph_root):
    source = glyphs(glyph_root, num_ways=3)
    sampler = TaskSampler(source, seed=0)
    train_classes = {c.split("@")[0] for t in sampler.sample_train(20) for c in t["classes"]}
    test_classes = {c.split("@")[0] for t in sampler.held_out() for c in t["classes"]}
    assert train_classes and test_classes and not train_classes & test_classes
    assert all(c.startswith(("Glyphs_01", "Glyphs_02")) for c in train_classes)
    assert all(c.startswith("Glyphs_03") for c in test_classes)
    sampler.write(tmp_path / "tasks.json")
    saved = json.loads((tmp_path / "tasks.json").read_text())
    assert saved["test_tasks"] == sampler.held_out() and saved["family"] == "Glyphs"
    assert TaskSampler(source, seed=0).held_out() == sampler.held_out()


def test_classification_batches_and_rotations(glyph_root):
    plain = glyphs(glyph_root)
    rotated = glyphs(glyph_root, rotations=True)
    rng = np.random.default_rng(0)
    assert len(rotated.sample_tasks(rng, 1)[0]["classes"]) == 5
    pool = {c for t in rotated.sample_tasks(rng, 200) for c in t["classes"]}
    assert {c.split("@")[1] for c in pool} == {"0", "90", "180", "270"}
    batch = plain.make_batch([{"classes": ["Glyphs_01/character01@0", "Glyphs_01/character01@90"]}],
                             np.random.default_rng(0), 2, 3)
    assert batch.support_inputs.shape == (1, 4, 1, 16, 16) and batch.query_inputs.shape == (1, 6, 1, 16, 16)
    assert batch.support_targets.tolist() == [[0, 0, 1, 1]] and batch.query_targets.tolist() == [[0] * 3 + [1] * 3]
    assert 0.0 <= batch.support_inputs.min() and batch.support_inputs.max() <= 1.0
    assert batch.support_inputs.mean() < 0.5  # strokes are 1 on a 0 background
    # The same drawings turned a quarter: the rotated class holds the rotated images.
    same = plain.make_batch([{"classes": ["Glyphs_01/character01@90"]}], np.random.default_rng(0), 2, 3)
    unrotated = plain.make_batch([{"classes": ["Glyphs_01/character01@0"]}], np.random.default_rng(0), 2, 3)
    assert torch.equal(same.support_inputs, torch.rot90(unrotated.support_inputs, 1, dims=(-2, -1)))


def test_bad_data_paths_and_requests_are_named(tmp_path, glyph_root):
    with pytest.raises(MetaRLError, match="images_background.*<alphabet>/<character>/\\*.png"):
        make_source("Omniglot", {"path": str(tmp_path)})
    with pytest.raises(MetaRLError, match="needs env_options.path"):
        make_source("Omniglot")
    with pytest.raises(MetaRLError, match="unknown task source 'Mnist'; accepted: Glyphs, Omniglot, Sinusoid"):
        make_source("Mnist")
    source = glyphs(glyph_root)
    with pytest.raises(MetaRLError, match="has 6 images; 5-shot with 5 query images"):
        source.make_batch(source.sample_tasks(np.random.default_rng(0), 1), np.random.default_rng(0), 5, 5)
    with pytest.raises(MetaRLError, match="learner 'protonet' classifies; source 'Sinusoid' is regression"):
        build("protonet", make_source("Sinusoid"))


def test_second_order_meta_gradient_matches_finite_differences():
    """MAML's meta-gradient through two inner steps, against central differences (float64)."""
    spec = get_learner_spec("maml")
    learner = spec.build(build_dataclass(spec.config_class, {"hidden_sizes": [5]}), source=make_source("Sinusoid"),
                         device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    model = learner.model.double()
    batch = make_source("Sinusoid").make_batch(
        make_source("Sinusoid").sample_tasks(np.random.default_rng(0), 3), np.random.default_rng(1), 4, 4)
    batch = FewShotBatch(*(t.double() for t in (batch.support_inputs, batch.support_targets,
                                                 batch.query_inputs, batch.query_targets)), None)

    def objective(create_graph):
        from metarl.supervised.adaptation import predict
        adapted = adapt(model, per_task(model, 3), batch.support_inputs, batch.support_targets, lr=0.05,
                        num_steps=2, classification=False, create_graph=create_graph)
        return per_task_loss(predict(model, adapted, batch.query_inputs), batch.query_targets,
                             classification=False).mean()

    analytic = torch.autograd.grad(objective(True), list(model.parameters()))
    eps = 1e-6
    for parameter, gradient in zip(model.parameters(), analytic):
        flat = parameter.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 4)):
            original = flat[i].item()
            flat[i] = original + eps
            plus = objective(True).item()
            flat[i] = original - eps
            minus = objective(True).item()
            flat[i] = original
            assert gradient.view(-1)[i].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("name", LEARNERS)
def test_every_learner_trains_adapts_and_repeats_itself(name, glyph_root):
    sources = [glyphs(glyph_root)] + ([make_source("Sinusoid")] if name in GRADIENT_LEARNERS else [])
    for source in sources:
        results = []
        for _ in range(2):  # same seeds, same numbers
            learner = build(name, source)
            sampler = TaskSampler(source, seed=0)
            stats = []
            meta_train(learner, source, sampler, num_iterations=2, num_shots=1, num_query=2,
                       data_rng=np.random.default_rng(0), on_iteration=lambda i, s: stats.append(s))
            assert len(stats) == 2 and all(np.isfinite(v) for s in stats for v in s.values())
            before = copy.deepcopy(learner.state_dict())
            result = evaluate_learner(learner, source, sampler.held_out()[:3], num_shots=1, num_query=2,
                                      num_stages=2, seed=0)
            after = learner.state_dict()
            for key, value in before.items():  # evaluation leaves the meta-learned state alone
                if key in ("model", "embedding", "modules"):
                    for k, v in value.items():
                        assert torch.equal(v, after[key][k]), (key, k)
            results.append(result)
        assert results[0] == results[1]
        result = results[0]
        gradient_based = name in GRADIENT_LEARNERS
        assert result["adaptation_unit"] == (GRADIENT_STEP if gradient_based else SUPPORT_SET)
        assert len(result["stages"]) == (3 if gradient_based else 1)
        assert result["metric"] == ("mse" if source.num_classes is None else "accuracy")
        assert len(result["stages"][0][f"per_task_{result['metric']}"]) == 3


def test_learner_state_round_trips(glyph_root):
    source = glyphs(glyph_root)
    for name in LEARNERS:
        trained = build(name, source)
        meta_train(trained, source, TaskSampler(source, 0), num_iterations=1, num_shots=1, num_query=2,
                   data_rng=np.random.default_rng(0))
        fresh = build(name, source, seed=1)
        fresh.load_state_dict(trained.state_dict())
        tasks = TaskSampler(source, 0).held_out()[:2]
        assert (evaluate_learner(fresh, source, tasks, num_shots=1, num_query=2, num_stages=1, seed=0)
                == evaluate_learner(trained, source, tasks, num_shots=1, num_query=2, num_stages=1, seed=0)), name


def test_the_default_glyph_set_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    import functools

    import metarl.supervised.glyphs as glyph_module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    small = functools.partial(generate_glyphs, num_background_alphabets=1, num_evaluation_alphabets=1,
                              characters_per_alphabet=5, num_drawers=2)
    monkeypatch.setattr(glyph_module, "generate_glyphs", lambda root: calls.append(root) or small(root))
    path = glyph_module.default_glyphs_path()
    assert path == tmp_path / "metarl" / f"glyphs-v{glyph_module.GLYPHS_VERSION}"
    assert (path / "images_evaluation").is_dir() and glyph_module.default_glyphs_path() == path
    assert len(calls) == 1 and [p.name for p in (tmp_path / "metarl").iterdir()] == [path.name]
    source = make_source("Glyphs", {"num_ways": 3, "image_size": 16})  # no path: the cached set
    assert source.make_batch(source.sample_tasks(np.random.default_rng(0), 1), np.random.default_rng(0),
                             1, 1).support_inputs.shape == (1, 3, 1, 16, 16)
