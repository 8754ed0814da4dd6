"""Evaluation-only rows of the 2D-navigation ablation (benchmarks/RESULTS.md): evaluate a MAML
run's checkpoint at a given iteration, optionally with other meta-test step sizes, on the
held-out goals × evaluation seeds, with the shared protocol (``metarl.train.evaluate_run``).

    python benchmarks/ablate_navigation.py runs/maml --iteration 60 --eval-inner-lrs 0.5

prints the mean return [95% CI] after k = 0..num_stages gradient steps.  Rows that change
training (action scaling, network) are separate runs: ``metarl train unit_actions=false ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from metarl.checkpoint import load_checkpoint
from metarl.evaluate import combine_seeds
from metarl.train import evaluate_run, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--iteration", type=int, default=None, help="checkpoint (default: latest)")
    parser.add_argument("--eval-inner-lrs", type=float, nargs="*", default=None,
                        help="meta-test step sizes (none given: the run's own)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    options = parser.parse_args()
    run, iteration = load_run(options.run_dir)
    if options.iteration is not None:
        path = options.run_dir / "checkpoints" / f"iteration_{options.iteration:06d}.pt"
        run.agent.load_state_dict(load_checkpoint(path)["agent"])
        iteration = options.iteration
    if options.eval_inner_lrs is not None:
        run.agent.config = dataclasses.replace(run.agent.config, eval_inner_lrs=tuple(options.eval_inner_lrs))
    results = [evaluate_run(run, iteration=iteration, seed=seed) for seed in options.seeds]
    result = combine_seeds(results) if len(results) > 1 else results[0]
    run.close()
    cells = []
    for stage in result["stages"]:
        r = stage["return"]
        cells.append(f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
    print(f"{options.run_dir} iteration {iteration} eval_inner_lrs "
          f"{list(run.agent.config.eval_inner_lrs)} seeds {options.seeds}: | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
