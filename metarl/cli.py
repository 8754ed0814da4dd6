"""Command line: ``metarl train|evaluate|compare|list`` (also ``python -m metarl``).

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
        raise MetaRLError(f"{self.prog}: {message}".replace("\n", "\\n"))  # an argument may hold a newline


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metarl", description="Meta-reinforcement learning: train, evaluate, compare, list.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="meta-train an agent (default: MAML-TRPO on 2D navigation)",
                                add_help=False)
    train.add_argument("-h", "--help", action="store_true",
                       help="show this help and every config key (of CONFIG and its agent, if given)")
    train.add_argument("args", nargs="*", metavar="[CONFIG] [key=value ...]",
                       help="a YAML config (path or shipped name) and/or key=value overrides")
    train.add_argument("--overwrite", action="store_true",
                       help="delete the run already in run_dir (all its files) and start a new one")
    train.add_argument("--resume", metavar="RUN_DIR|GROUP_DIR",
                       help="continue a run from its latest checkpoint (a group: its unfinished seeds)")
    train.add_argument("--seeds", nargs="+", metavar="K",
                       help="train these seeds side by side, one run each under one group directory "
                            "(run_dir=GROUP_DIR; default runs/<env>-<agent>-seeds-<time>)")
    train.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                       help="import MODULE first (it registers a family or agent of your own); "
                            "recorded in the run's config")
    train.add_argument("--workers", type=int, default=None, metavar="N",
                       help="seeds trained at once (default: as many as the CPU cores allow)")
    train.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT|local",
                       help="with --seeds: run the seeds as Ray tasks on this cluster ('local': a "
                            "new local Ray on 127.0.0.1; default: env_options.ray_address if set, "
                            "else local processes)")

    evaluate = commands.add_parser("evaluate", help="measure adaptation on held-out tasks")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--split", default="test", choices=["test", "ood", "train_classes"])
    evaluate.add_argument("--seeds", type=int, nargs="+", default=None,
                          help="evaluation seeds (action noise, env resets); default: the run's seed")
    evaluate.add_argument("--num-tasks", type=int, default=None)
    evaluate.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])

    compare = commands.add_parser("compare", help="evaluate several runs (agents, seeds, baselines) side by side")
    compare.add_argument("run_dirs", metavar="GROUP_DIR|RUN_DIR", nargs="+",
                         help="run directories, or group directories of seeds (metarl train --seeds)")
    compare.add_argument("--split", default="test", choices=["test", "ood"])
    compare.add_argument("--seeds", type=int, nargs="+", default=None,
                         help="evaluation seeds for every run; default: each run's own seed")
    compare.add_argument("--num-tasks", type=int, default=None)
    compare.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    compare.add_argument("--pool-seeds", action="store_true",
                         help="one curve per env and agent, pooling its runs (training seeds)")
    compare.add_argument("--output", default="compare.png", metavar="PNG",
                         help="where to draw the plot (the table also goes to the same name .json)")

    listing = commands.add_parser("list", help="list env families, agents and shipped configs")
    listing.add_argument("--configs", action="store_true",
                         help="each shipped config's family, agent and budget (env and gradient steps)")
    train.set_defaults(format_help=train.format_help)
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
    from metarl import seeds
    from metarl.config import load_config
    from metarl.train import train

    if options.seeds:  # ``--seeds 0 1 2 key=value``: what follows the seeds is the usual arguments
        seed_list = [item for item in options.seeds if item.lstrip("-").isdigit()]
        options.args = [*options.args, *options.seeds[len(seed_list):]]
        options.seeds = [int(item) for item in seed_list]
        if not options.seeds:
            raise MetaRLError("--seeds needs at least one integer seed, e.g. --seeds 0 1 2")
    config_path, overrides = _split_train_args(options.args)
    if options.imports:
        overrides.append("imports=" + json.dumps(options.imports))
    if options.help:
        from metarl.config_help import train_keys_help

        print(options.format_help())
        print(train_keys_help(config_path, overrides))
        return 0
    if options.seeds or (options.resume and seeds.is_group_dir(Path(options.resume))):
        return _train_group(options, config_path, overrides)
    if options.ray_address is not None:
        raise MetaRLError("--ray-address runs the seeds of --seeds on Ray; for one run's rollouts "
                          "use env_options.engine=ray env_options.ray_address=...")
    if options.resume:
        run_dir = Path(options.resume)
        if not (run_dir / "config.yaml").is_file():
            raise MetaRLError(f"cannot resume {options.resume!r}: not a run directory (no config.yaml)")
        if config_path is not None:
            raise MetaRLError("--resume takes the run's own config.yaml; give only key=value overrides")
        if options.overwrite:
            raise MetaRLError("--overwrite starts a new run; it does not go with --resume")
        config = load_config(run_dir / "config.yaml", overrides, run_config=True)
        run_dir = train(config, resume_from=run_dir)
    else:
        config = load_config(config_path, overrides)
        run_dir = train(config, overwrite=options.overwrite)
    print(f"done. run directory: {run_dir}")
    print(f"evaluate it:  metarl evaluate {run_dir}")
    print(f"watch it:     tensorboard --logdir {run_dir}")
    return 0


def _train_group(options: argparse.Namespace, config_path: str | None, overrides: list[str]) -> int:
    """``--seeds``: a new group; ``--resume GROUP_DIR``: its unfinished seeds."""
    from metarl import seeds
    from metarl.config import load_config

    if options.resume:
        if config_path is not None or options.seeds:
            raise MetaRLError("--resume GROUP_DIR takes the group's own config and seeds; give only "
                              "key=value overrides")
        group_dir = Path(options.resume)
        jobs = seeds.plan_resume(group_dir, overrides)
    else:
        group_dir, jobs = seeds.plan_group(load_config(config_path, overrides), options.seeds)
    if options.workers is not None and options.workers < 1:
        raise MetaRLError(f"--workers must be at least 1; got {options.workers}")
    if not jobs:
        print(f"nothing to do: every seed of {group_dir} has finished")
        return 0
    address = options.ray_address or jobs[0].config.env_options.get("ray_address")
    if address is not None:
        if options.workers is not None:
            raise MetaRLError("--workers sets local processes; on Ray the cluster's free CPUs decide")
        launcher = seeds.RayTasks(None if address == "local" else address,
                                  cpus_per_seed=max(1, jobs[0].config.torch_threads))
        print(f"group directory: {group_dir}; seeds {[job.seed for job in jobs]} as Ray tasks",
              file=sys.stderr)
    else:
        workers = options.workers or seeds.default_workers(len(jobs), jobs[0].config.torch_threads)
        launcher = seeds.LocalProcesses(workers)
        print(f"group directory: {group_dir}; seeds {[job.seed for job in jobs]}, {workers} at a time",
              file=sys.stderr)
    seeds.run_group(jobs, launcher)
    print(f"done. group directory: {group_dir}")
    print(f"compare it:   metarl compare {group_dir}")
    print(f"watch it:     tensorboard --logdir {group_dir}")
    return 0


def _evaluate_dir(run_dir: Path, *, split: str, seeds: list[int] | None, num_tasks: int | None,
                  device: str | None) -> dict:
    """Evaluate a run directory's latest checkpoint with the shared protocol; the result carries
    ``run_dir, split, seeds, iteration, env, agent, task_parameter`` and the training steps
    (``train_env_steps`` for RL, ``train_examples`` for supervised runs)."""
    from metarl.evaluate import combine_seeds
    from metarl.train import evaluate_run, load_run

    if num_tasks is not None and num_tasks < 1:
        raise MetaRLError(f"--num-tasks must be at least 1; got {num_tasks}")
    run, iteration = load_run(run_dir, device=device)
    seeds = seeds or [run.config.seed]
    try:
        results = [evaluate_run(run, iteration=iteration, split=split, seed=seed, num_tasks=num_tasks)
                   for seed in seeds]
    finally:
        run.close()
    result = combine_seeds(results) if len(results) > 1 else results[0]
    result.update({"run_dir": str(run_dir), "split": split, "seeds": seeds, "iteration": iteration,
                   "env": run.config.env, "agent": run.config.agent, "requested_num_tasks": num_tasks,
                   "task_parameter": run.task_parameter, f"train_{run.steps_name}": run.steps,
                   "train_steps": run.steps})
    return result


def _eval_name(split: str) -> str:
    return "eval" if split == "test" else f"eval_{split}"


def cmd_evaluate(options: argparse.Namespace) -> int:
    from metarl.run_dir import locked_run_dir

    with locked_run_dir(Path(options.run_dir), create=False):  # it writes eval files and metrics
        return _evaluate_and_write(options)


def _evaluate_and_write(options: argparse.Namespace) -> int:
    from metarl.evaluate import evaluation_scalars, format_table
    from metarl.logger import Logger
    from metarl.adapt_then_evaluate import format_protocol_table
    from metarl.plots import adaptation_curve_figure, per_class_figure, per_task_figure, save_figure

    run_dir = Path(options.run_dir)
    result = _evaluate_dir(run_dir, split=options.split, seeds=options.seeds,
                           num_tasks=options.num_tasks, device=options.device)
    out = run_dir / f"{_eval_name(options.split)}.json"
    out.write_text(json.dumps(result, indent=1))
    logger = Logger(run_dir)
    logger.log_scalars(evaluation_scalars(result, prefix=f"eval_{options.split}"),
                       step=result["train_steps"])
    logger.close()
    title = (f"{result['agent']} on {result['env']}, iteration {result['iteration']}, "
             f"{options.split} split, seeds {result['seeds']}")
    figure = adaptation_curve_figure([(result["agent"], result)], title=title)
    png = save_figure(figure, run_dir / f"{_eval_name(options.split)}_adaptation.png")
    if "classes" in result:  # adapt_then_evaluate (Meta-World): success per task class
        per_task = save_figure(per_class_figure(result, title=title),
                               run_dir / f"{_eval_name(options.split)}_per_task.png")
        print(format_protocol_table(result, title=title))
    else:
        per_task = save_figure(per_task_figure(result, result["task_parameter"], title=title),
                               run_dir / f"{_eval_name(options.split)}_per_task.png")
        print(format_table(result, title=title))
    print(f"wrote {out}, {png} and {per_task}")
    return 0


def _cached_or_evaluate(run_dir: Path, options: argparse.Namespace) -> dict:
    """The run's saved evaluation when it answers the same request (split, seeds, number of
    tasks) for its latest checkpoint, else a fresh one."""
    import yaml

    from metarl.checkpoint import latest_checkpoint

    path = run_dir / f"{_eval_name(options.split)}.json"
    checkpoint = latest_checkpoint(run_dir)
    if path.is_file() and checkpoint is not None and (run_dir / "config.yaml").is_file():
        saved = json.loads(path.read_text())
        seeds = options.seeds or [yaml.safe_load((run_dir / "config.yaml").read_text()).get("seed", 0)]
        if (saved.get("iteration") == int(checkpoint.stem.split("_")[-1])
                and saved.get("seeds") == seeds
                and saved.get("requested_num_tasks", "absent") == options.num_tasks):
            return saved
    return _evaluate_dir(run_dir, split=options.split, seeds=options.seeds,
                         num_tasks=options.num_tasks, device=options.device)


def cmd_compare(options: argparse.Namespace) -> int:
    from metarl.evaluate import combine_seeds, common_metric, compare_table
    from metarl.plots import adaptation_curve_figure, save_figure

    results = [_cached_or_evaluate(run_dir, options) for run_dir in _expand_groups(options.run_dirs)]
    envs = sorted({result["env"] for result in results})
    if options.pool_seeds:
        groups: dict[tuple[str, str], list[dict]] = {}
        for result in results:
            groups.setdefault((result["env"], result["agent"]), []).append(result)
        labelled = []
        for (env, agent), members in groups.items():
            pooled = combine_seeds(members) if len(members) > 1 else members[0]
            pooled.update({"env": env, "agent": agent, "run_dirs": [m["run_dir"] for m in members]})
            label = f"{agent} ({len(members)} runs)" if len(envs) == 1 else f"{agent} on {env} ({len(members)} runs)"
            labelled.append((label, pooled))
    else:
        labels = [f"{r['agent']} seed {r['seeds'][0]}" if len(r["seeds"]) == 1 else f"{r['agent']} seeds {r['seeds']}"
                  for r in results]
        if len(envs) > 1:
            labels = [f"{label} on {r['env']}" for label, r in zip(labels, results)]
        if len(set(labels)) < len(labels):  # the same agent and seed twice: name the directories
            labels = [f"{label} ({Path(r['run_dir']).name})" for label, r in zip(labels, results)]
        labelled = list(zip(labels, results))
    metric = common_metric(results)  # RL returns and supervised accuracies never share a table
    title = f"{', '.join(envs)}: held-out {metric} by adaptation stage ({options.split} split)"
    print(title)
    print(compare_table(labelled))
    png = save_figure(adaptation_curve_figure(labelled, title=title), Path(options.output))
    table = png.with_suffix(".json")
    table.write_text(json.dumps({label: result for label, result in labelled}, indent=1))
    print(f"wrote {png} and {table}")
    _compare_over_seeds(results, Path(options.output))
    return 0


def _expand_groups(paths: Sequence[str]) -> list[Path]:
    """Run directories as given, group directories (``metarl train --seeds``) as their runs."""
    run_dirs = []
    for path in map(Path, paths):
        members = sorted(p.parent for p in path.glob("*/config.yaml")) if path.is_dir() else []
        if (path / "config.yaml").is_file() or not members:
            run_dirs.append(path)  # a run, or an error that names the path when it is evaluated
        else:
            run_dirs.extend(members)
    return run_dirs


def _compare_over_seeds(results: list[dict], output: Path) -> None:
    """Per agent (and env): IQM and mean over training seeds x tasks with stratified bootstrap
    CIs, the probability of improvement between agents, and the figure of both."""
    from itertools import combinations

    import numpy as np

    from metarl.evaluate import LOWER_IS_BETTER, common_metric, seed_score_matrices, seeds_table
    from metarl.plots import save_figure, seeds_figure
    from metarl.stats import over_seeds, performance_profile, probability_of_improvement_ci

    members: dict[tuple[str, str], list[dict]] = {}
    for result in results:
        members.setdefault((result["env"], result["agent"]), []).append(result)
    envs = {env for env, _ in members}
    groups = {}
    for (env, agent), runs in members.items():
        label = agent if len(envs) == 1 else f"{agent} on {env}"
        matrices = seed_score_matrices(runs)
        groups[label] = {"env": env, "agent": agent, "unit": runs[0]["adaptation_unit"],
                         "metric": common_metric(runs),
                         "run_dirs": [r["run_dir"] for r in runs], "matrices": matrices,
                         "stages": [over_seeds(m, seed=k) for k, m in enumerate(matrices)]}
    for env in envs:  # one threshold grid per env, so its agents' profiles share an axis
        last = [g["matrices"][-1] for g in groups.values() if g["env"] == env]
        thresholds = np.linspace(min(m.min() for m in last), max(m.max() for m in last), 50)
        for group in groups.values():
            if group["env"] == env:
                group["profile"] = {"thresholds": thresholds,
                                    **performance_profile(group["matrices"][-1], thresholds)}
    print("\nover training seeds (rliable: IQM and mean, stratified bootstrap 95% CI over seeds x tasks)")
    print(seeds_table([(label, g["stages"]) for label, g in groups.items()]))
    improvements = {}
    for (x, gx), (y, gy) in combinations(groups.items(), 2):
        if gx["env"] != gy["env"] or gx["matrices"][-1].shape[1] != gy["matrices"][-1].shape[1]:
            continue
        # "x better than y": for an error (mse), x's lower values are the improvement.
        sign = -1.0 if gx["metric"] in LOWER_IS_BETTER else 1.0
        improvement = probability_of_improvement_ci(sign * gx["matrices"][-1], sign * gy["matrices"][-1])
        improvements[f"P({x} > {y})"] = improvement
        low, high = improvement["ci"]
        better = " (lower mse)" if sign < 0 else ""
        print(f"P({x} > {y}){better} at the last stage: {improvement['probability']:.2f} [{low:.2f}, {high:.2f}]")
    png = save_figure(seeds_figure(list(groups.items()), title="statistics over training seeds"),
                      output.with_name(output.stem + "_seeds.png"))
    data = {"groups": {label: {k: v for k, v in g.items() if k not in ("matrices", "profile")}
                       for label, g in groups.items()},
            "probability_of_improvement": improvements}
    table = png.with_suffix(".json")
    table.write_text(json.dumps(data, indent=1))
    print(f"wrote {png} and {table}")


def cmd_list(options: argparse.Namespace) -> int:
    from metarl import configs
    from metarl.registry import list_agents
    from metarl.tasks import list_families

    if options.configs:
        from metarl.config_help import shipped_configs_table

        print("shipped configs (metarl train NAME); steps are training totals, upper bounds:")
        print(shipped_configs_table())
        return 0
    from metarl.config import read_yaml
    from metarl.envs.metaworld import available as metaworld_available, is_metaworld_name

    print("env families (RL; env=NAME):")
    for family in list_families():
        facts = [f"Gymnasium id {family.gym_id}" if family.gym_id else "no Gymnasium id",
                 f"oracle sees a {family.encode_task.dim}-number task code" if family.encode_task
                 else "no task encoder (no oracle)"]
        print(f"  {family.name:<28} {family.description}  [{family.citation}]  ({'; '.join(facts)})")
    if not metaworld_available():
        print(f"  {'ML1-<env>, ML10, ML45':<28} Meta-World: install the extra, "
              "pip install 'metarl[metaworld]' (README, Install)")
    print("RL agents (agent=NAME with an env family):")
    for spec in list_agents():
        print(f"  {spec.name:<28} {spec.description}")
    from metarl.supervised.learner import list_learners
    from metarl.supervised.task_source import list_sources

    print("supervised few-shot task sources (metarl.supervised; env=NAME):")
    for source in list_sources():
        print(f"  {source.name:<28} {source.description}")
    print("supervised few-shot learners (metarl.learners; agent=NAME with a task source):")
    for learner in list_learners():
        print(f"  {learner.name:<28} {learner.description}")
    print("shipped configs (metarl train NAME; budgets: metarl list --configs):")
    for path in sorted(Path(configs.__file__).parent.glob("*.yaml")):
        env = str(read_yaml(path).get("env", ""))
        missing = is_metaworld_name(env) and not metaworld_available()
        print(f"  {path.stem}" + (f"  ({env}: needs the metaworld extra)" if missing else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _parser()
        options, unknown = parser.parse_known_args(argv)
        # ``train CONFIG --import m key=value``: argparse ends a positional list at an option, so
        # the arguments after it come back unknown; they are still the config and its overrides.
        if unknown and options.command == "train" and not any(u.startswith("-") for u in unknown):
            options.args = [*options.args, *unknown]
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        handler = {"train": cmd_train, "evaluate": cmd_evaluate, "compare": cmd_compare,
                   "list": cmd_list}[options.command]
        return handler(options)
    except MetaRLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the latest checkpoint is kept; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
