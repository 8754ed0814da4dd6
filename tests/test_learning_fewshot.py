"""Supervised few-shot learners really meta-learn (slow; ``python -m pytest -m slow -s`` prints
the tables recorded in benchmarks/RESULTS.md).

* Sinusoid, 10-shot, the 1-40-40-1 ReLU net (MAML sec. 5.1, Fig. 2): held-out MSE after 1 and 10
  gradient steps, MAML and Reptile against the network pretrained on all tasks.
* The generated glyph set (Omniglot layout), 5-way 1-shot and 5-shot: held-out accuracy of MAML,
  FOMAML, Reptile, Prototypical, Matching and Relation Networks, each far above chance (20%) and
  above the same network untrained; the same seeds give the same numbers.
"""

import numpy as np
import pytest
import torch

from metarl.config import build_dataclass
from metarl.supervised.evaluate import evaluate_learner
from metarl.supervised.glyphs import generate_glyphs
from metarl.supervised.learner import get_learner_spec
from metarl.supervised.task_source import make_source
from metarl.supervised.train import meta_train
from metarl.tasks import TaskSampler

SINUSOID_ITERATIONS = 3000
SINUSOID_OPTIONS = {
    "maml": {},  # the paper: 25 tasks, 1 step of α = 0.01, Adam 1e-3
    "reptile": {"anneal_iterations": SINUSOID_ITERATIONS},  # 10 tasks, 5 steps of 0.02, ε 1 -> 0
    "pretrained": {},  # 25 tasks pooled, Adam 1e-3; fine-tuned with α = 0.01 like MAML
}
GLYPH_ITERATIONS = 100
GLYPH_EVAL_STEPS = 3
GLYPH_OPTIONS = {
    "maml": {"meta_batch_size": 4, "inner_lr": 0.4},  # the paper's Omniglot α, 1 step in training
    "fomaml": {"meta_batch_size": 4, "inner_lr": 0.4},
    "reptile": {"meta_batch_size": 4, "inner_lr": 0.1, "num_inner_steps": 3,
                "anneal_iterations": GLYPH_ITERATIONS},
    "protonet": {},
    "matching": {},
    "relation": {},
}


def train_and_evaluate(name, source, options, *, iterations, num_shots, num_query, eval_query,
                       num_stages, num_tasks, seed=0):
    """(untrained result, trained result) on the source's held-out tasks."""
    spec = get_learner_spec(name)
    learner = spec.build(build_dataclass(spec.config_class, options), source=source,
                         device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed))
    sampler = TaskSampler(source, seed)
    tasks = sampler.held_out()[:num_tasks]

    def evaluate():
        return evaluate_learner(learner, source, tasks, num_shots=num_shots, num_query=eval_query,
                                num_stages=num_stages, seed=seed + 1)

    untrained = evaluate()
    meta_train(learner, source, sampler, num_iterations=iterations, num_shots=num_shots, num_query=num_query,
               data_rng=np.random.default_rng(seed + 2))
    return untrained, evaluate()


def means(result):
    return [stage[result["metric"]]["mean"] for stage in result["stages"]]


@pytest.mark.slow
def test_maml_and_reptile_beat_the_pretrained_network_on_sinusoids():
    source = make_source("Sinusoid")
    mse = {name: means(train_and_evaluate(name, source, options, iterations=SINUSOID_ITERATIONS, num_shots=10,
                                          num_query=10, eval_query=100, num_stages=10, num_tasks=100)[1])
           for name, options in SINUSOID_OPTIONS.items()}
    print(f"\nSinusoid 10-shot, 100 held-out tasks, {SINUSOID_ITERATIONS} iterations: MSE after k steps")
    print("learner    | k=0    | k=1    | k=10")
    for name, values in mse.items():
        print(f"{name:<10} | {values[0]:.3f}  | {values[1]:.3f}  | {values[10]:.3f}")
    pretrained = mse["pretrained"]
    for name in ("maml", "reptile"):
        assert mse[name][1] < 0.7 * pretrained[1], (name, mse[name][1], pretrained[1])
        assert mse[name][10] < 0.5 * pretrained[10], (name, mse[name][10], pretrained[10])
    assert mse["maml"][1] < 0.5 * pretrained[1]


@pytest.fixture(scope="module")
def glyph_source(tmp_path_factory):
    root = generate_glyphs(tmp_path_factory.mktemp("glyphs") / "set")  # the shipped default's set
    return root


@pytest.mark.slow
@pytest.mark.parametrize("num_shots", [1, 5])
def test_every_classifier_is_far_above_chance_on_held_out_glyphs(glyph_source, num_shots):
    source = make_source("Glyphs", {"path": str(glyph_source), "num_ways": 5})
    rows = {}
    for name, options in GLYPH_OPTIONS.items():
        untrained, trained = train_and_evaluate(
            name, source, options, iterations=GLYPH_ITERATIONS, num_shots=num_shots, num_query=5,
            eval_query=5, num_stages=GLYPH_EVAL_STEPS, num_tasks=60)
        rows[name] = (means(untrained)[-1], trained["stages"][-1]["accuracy"])
    print(f"\nGlyphs 5-way {num_shots}-shot, 60 held-out tasks x 25 queries, {GLYPH_ITERATIONS} iterations")
    print("learner   | untrained | trained | 95% CI")
    for name, (before, after) in rows.items():
        print(f"{name:<9} | {before:.3f}     | {after['mean']:.3f}   | [{after['ci_low']:.3f}, {after['ci_high']:.3f}]")
    for name, (before, after) in rows.items():
        assert after["mean"] >= 0.4 and after["ci_low"] > 0.3, (name, after)
        assert after["mean"] > before, (name, before, after["mean"])
    if num_shots == 1:  # same seeds, same numbers
        again = train_and_evaluate("protonet", source, {}, iterations=GLYPH_ITERATIONS, num_shots=1, num_query=5,
                                   eval_query=5, num_stages=GLYPH_EVAL_STEPS, num_tasks=60)[1]
        assert again["stages"][-1]["accuracy"] == rows["protonet"][1]
