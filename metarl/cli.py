"""Command line: ``metarl train|evaluate|list`` (also ``python -m metarl``).

User errors (bad config keys, unknown names, missing run directories) exit with status 2 and
one line naming what was wrong and what is accepted; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from metarl.tasks import MetaRLError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise MetaRLError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metarl", description="Meta-reinforcement learning: train, evaluate, list.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="meta-train an agent (default: MAML-TRPO on 2D navigation)")
    train.add_argument("args", nargs="*", metavar="[CONFIG] [key=value ...]",
                       help="a YAML config (path or shipped name) and/or key=value overrides")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")

    evaluate = commands.add_parser("evaluate", help="measure adaptation on held-out tasks")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--split", default="test", choices=["test", "ood"])
    evaluate.add_argument("--seeds", type=int, nargs="+", default=None,
                          help="evaluation seeds (action noise, env resets); default: the run's seed")
    evaluate.add_argument("--num-tasks", type=int, default=None)
    evaluate.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])

    commands.add_parser("list", help="list env families, agents and shipped configs")
    return parser


def _split_train_args(args: Sequence[str]) -> tuple[str | None, list[str]]:
    config_path = None
    overrides = []
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif config_path is None:
            config_path = arg
        else:
            raise MetaRLError(
                f"unexpected argument {arg!r}: give one config file, then key=value overrides"
            )
    return config_path, overrides


def cmd_train(options: argparse.Namespace) -> int:
    from metarl.config import build_dataclass, load_config, TrainConfig
    from metarl.train import train

    config_path, overrides = _split_train_args(options.args)
    if options.resume:
        run_dir = Path(options.resume)
        if not (run_dir / "config.yaml").is_file():
            raise MetaRLError(f"cannot resume {options.resume!r}: not a run directory (no config.yaml)")
        if config_path is not None:
            raise MetaRLError("--resume takes the run's own config.yaml; give only key=value overrides")
        config = load_config(run_dir / "config.yaml", overrides)
        run_dir = train(config, resume_from=run_dir)
    else:
        config = load_config(config_path, overrides)
        run_dir = train(config)
    print(f"done. run directory: {run_dir}")
    print(f"evaluate it:  metarl evaluate {run_dir}")
    print(f"watch it:     tensorboard --logdir {run_dir}")
    return 0


def cmd_evaluate(options: argparse.Namespace) -> int:
    from metarl.evaluate import combine_seeds, evaluation_scalars, format_table
    from metarl.logger import Logger
    from metarl.train import evaluate_run, load_run

    run, iteration = load_run(Path(options.run_dir), device=options.device)
    seeds = options.seeds or [run.config.seed]
    results = [evaluate_run(run, iteration=iteration, split=options.split, seed=seed,
                            num_tasks=options.num_tasks) for seed in seeds]
    result = combine_seeds(results) if len(results) > 1 else results[0]
    result.update({"run_dir": str(options.run_dir), "split": options.split, "seeds": seeds,
                   "iteration": iteration, "env": run.config.env, "agent": run.config.agent,
                   "env_steps": run.sampler.env_steps})
    out = Path(options.run_dir) / "eval.json"
    out.write_text(json.dumps(result, indent=1))
    logger = Logger(Path(options.run_dir))
    logger.log_scalars(evaluation_scalars(result, prefix=f"eval_{options.split}"), step=run.sampler.env_steps)
    logger.close()
    title = (f"{run.config.agent} on {run.config.env}, iteration {iteration}, "
             f"{options.split} split, seeds {seeds}")
    print(format_table(result, title=title))
    print(f"wrote {out}")
    return 0


def cmd_list(options: argparse.Namespace) -> int:
    from metarl import configs
    from metarl.registry import list_agents
    from metarl.tasks import list_families

    print("env families:")
    for family in list_families():
        print(f"  {family.name:<28} {family.description}  [{family.citation}]")
    print("agents:")
    for spec in list_agents():
        print(f"  {spec.name:<28} {spec.description}")
    print("shipped configs (metarl train NAME):")
    for path in sorted(Path(configs.__file__).parent.glob("*.yaml")):
        print(f"  {path.stem}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        options = _parser().parse_args(argv)
        handler = {"train": cmd_train, "evaluate": cmd_evaluate, "list": cmd_list}[options.command]
        return handler(options)
    except MetaRLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the latest checkpoint is kept; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
