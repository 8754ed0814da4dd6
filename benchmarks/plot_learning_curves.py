"""Held-out learning curves of training runs: success rate and return vs env steps.

Reads each run's ``metrics.jsonl`` (the periodic held-out evaluations, ``eval/...`` at the
evaluation interval), prints a Markdown table of the points and draws one PNG with a success
panel and a return panel, a curve per run.  The stage plotted is the last one evaluated (after
adaptation: the trial's last episode for RL², the adapted policy for MAML)::

    python benchmarks/plot_learning_curves.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --output curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metarl.plots import save_figure
from metarl.tasks import MetaRLError


def evaluation_points(run_dir: Path) -> list[tuple[int, float | None, float, float | None, float]]:
    """``(env_steps, success rate, return, stage-0 success rate, stage-0 return)`` of every
    held-out evaluation of a run: at its last adaptation stage, and before adaptation."""
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        stages = sorted(int(key.rsplit("_", 1)[1]) for key in row if key.startswith("eval/return_stage_"))
        if not stages:
            continue
        last = stages[-1]
        points.append((int(row["env_steps"]), row.get(f"eval/success_rate_stage_{last}"),
                       float(row[f"eval/return_stage_{last}"]), row.get("eval/success_rate_stage_0"),
                       float(row["eval/return_stage_0"])))
    if not points:
        raise MetaRLError(f"{str(run_dir)!r} has no held-out evaluation in metrics.jsonl")
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="")
    options = parser.parse_args()
    import matplotlib.pyplot as plt

    figure, (success_axis, return_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    print("| run | env steps | success, last stage (stage 0) | return, last stage (stage 0) |\n|---|---|---|---|")
    for item in options.runs:
        label, _, path = item.partition("=")
        if not path:
            raise MetaRLError(f"expected LABEL=RUN_DIR, got {item!r}")
        points = evaluation_points(Path(path))
        steps = [p[0] / 1e6 for p in points]
        if all(p[1] is not None for p in points):
            success_axis.plot(steps, [p[1] for p in points], marker="o", label=label)
        return_axis.plot(steps, [p[2] for p in points], marker="o", label=label)
        for env_steps, success, value, success_0, value_0 in points:
            shown = "-" if success is None else f"{success:.2f} ({success_0:.2f})"
            print(f"| {label} | {env_steps / 1e3:.0f}k | {shown} | {value:.0f} ({value_0:.0f}) |")
    success_axis.set(xlabel="env steps (millions)", ylabel="held-out success rate", ylim=(-0.02, 1.02))
    return_axis.set(xlabel="env steps (millions)", ylabel="held-out return (episode)")
    for axis in (success_axis, return_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if options.title:
        figure.suptitle(options.title)
    figure.tight_layout()
    print(f"wrote {save_figure(figure, options.output)}")


if __name__ == "__main__":
    main()
