"""The shared meta-test protocol and its statistics, against known answers and naive references."""

import math

import numpy as np
import pytest
import torch

from metarl.evaluate import (combine_seeds, compare_table, evaluation_scalars, final_metrics,
                             format_table, meta_evaluate, paired_difference)
from metarl.rollout import Sampler
from metarl.stats import bootstrap_ci, interquartile_mean, summarize
from metarl.tasks import MetaRLError, TaskSampler, get_family
from metarl.trajectories import Trajectories

STEP = 0.1       # Navigation2D's action bound: the furthest a step can move per coordinate
TOLERANCE = 0.01  # Navigation2D terminates when both coordinates are within this of the goal


# ------------------------------------------------------------------------------ naive references
def naive_iqm(values):
    """The 25% trimmed mean by hand: drop floor(n / 4) values at each end, average the rest."""
    x = sorted(float(v) for v in np.ravel(values))
    for _ in range(len(x) // 4):
        x.pop(0)
        x.pop()
    return sum(x) / len(x)


def naive_bootstrap(values, *, statistic, seed, num_resamples=2000, confidence=0.95):
    """One resample at a time, quantiles by sorting and linear interpolation by hand."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    stats = sorted(statistic(x[rng.integers(0, x.size, size=x.size)]) for _ in range(num_resamples))

    def quantile(q):
        position = q * (num_resamples - 1)
        low = math.floor(position)
        high = min(low + 1, num_resamples - 1)
        return stats[low] + (position - low) * (stats[high] - stats[low])

    alpha = (1 - confidence) / 2
    return quantile(alpha), quantile(1 - alpha)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13, 40])
def test_iqm_matches_replication_reference(n):
    values = np.random.default_rng(n).normal(size=n) * 10
    assert interquartile_mean(values) == pytest.approx(naive_iqm(values), rel=1e-12, abs=1e-12)


def test_iqm_is_rliables_and_scipys_trimmed_mean():
    """The issue's example: the old boundary-weighted IQM gave 0.300 here."""
    assert interquartile_mean([0, 0, 0, 1, 10]) == pytest.approx(1 / 3)
    trim_mean = pytest.importorskip("scipy.stats").trim_mean
    for n in range(1, 30):
        values = np.random.default_rng(n).normal(size=n)
        assert interquartile_mean(values) == pytest.approx(trim_mean(values, 0.25), rel=1e-12)


def test_iqm_is_the_middle_half_mean_when_n_divides_by_4():
    values = np.array([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -100.0])
    assert interquartile_mean(values) == pytest.approx(np.mean([2.0, 3.0, 4.0, 5.0]))


@pytest.mark.parametrize("statistic", [np.mean, interquartile_mean])
def test_bootstrap_matches_naive_loop(statistic):
    values = np.random.default_rng(0).exponential(size=23)
    low, high = bootstrap_ci(values, statistic=statistic, seed=5)
    ref_low, ref_high = naive_bootstrap(values, statistic=statistic, seed=5)
    assert low == pytest.approx(ref_low, rel=1e-12) and high == pytest.approx(ref_high, rel=1e-12)
    assert low < statistic(values) < high


def test_bootstrap_ci_is_close_to_the_normal_interval_for_many_samples():
    values = np.random.default_rng(1).normal(loc=3.0, scale=2.0, size=2000)
    low, high = bootstrap_ci(values, seed=0)
    half_width = 1.96 * values.std() / math.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half_width, abs=0.02)
    assert high == pytest.approx(values.mean() + half_width, abs=0.02)


def test_summarize_fields():
    values = np.arange(10.0)
    summary = summarize(values, seed=2)
    assert summary["mean"] == 4.5 and summary["count"] == 10
    assert summary["iqm"] == pytest.approx(naive_iqm(values))
    assert (summary["ci_low"], summary["ci_high"]) == bootstrap_ci(values, seed=2)


# ------------------------------------------------------------------- a scripted agent, known answer
def closed_form_return(goal):
    """Return of moving straight at the goal at the full step length 0.1 (Navigation2D).

    After step t the distance is max(d - 0.1 t, 0) along the straight line, so each coordinate's
    offset is that distance times |g_i| / d; the episode ends at the first step where both
    offsets are below the tolerance, and the return is minus the sum of distances up to it.
    """
    g = np.asarray(goal, dtype=np.float64)
    d = float(np.linalg.norm(g))
    largest_share = float(np.abs(g).max()) / d
    total, t = 0.0, 0
    while True:
        t += 1
        distance = max(d - STEP * t, 0.0)
        total += distance
        if distance * largest_share < TOLERANCE:
            return -total


class StraightToGoal:
    """Oracle controller: knows each sub-env's goal and moves straight at it (no learning)."""

    def __init__(self, goals):
        self.goals = torch.as_tensor(goals, dtype=torch.float32)

    def act(self, observations):
        offset = self.goals - observations
        length = offset.norm(dim=1, keepdim=True)
        # A step of length STEP in env units; the policy acts in [-1, 1], the env's box is ±STEP.
        return offset * torch.clamp(STEP / length.clamp_min(1e-12), max=1.0) / STEP


class ScriptedAgent:
    """A MetaAgent whose every stage runs the straight-to-goal controller."""

    adaptation_unit = "scripted stage"
    meta_batch_size = 1

    def adapt(self, tasks, sampler, *, num_stages, episodes_per_stage, generator):
        goals = [task["goal"] for task in tasks for _ in range(episodes_per_stage)]
        for _ in range(num_stages + 1):
            yield sampler.sample(tasks, StraightToGoal(goals), episodes_per_task=episodes_per_stage)


def test_evaluator_returns_the_closed_form_value_of_a_scripted_oracle():
    family = get_family("Navigation2D")
    tasks = TaskSampler(family, seed=3).held_out("test")[:12]
    sampler = Sampler(family, seed=0)
    result = meta_evaluate(ScriptedAgent(), sampler, tasks, num_stages=2, episodes_per_stage=3,
                           generator=torch.Generator().manual_seed(0))
    expected = np.array([closed_form_return(task["goal"]) for task in tasks])
    assert result["num_tasks"] == 12 and result["adaptation_unit"] == "scripted stage"
    assert [entry["stage"] for entry in result["stages"]] == [0, 1, 2]
    assert result["tasks"] == tasks
    assert result["env_steps"] == sampler.env_steps > 0
    for entry in result["stages"]:
        np.testing.assert_allclose(entry["per_task_return"], expected, atol=1e-3)
        assert entry["return"]["mean"] == pytest.approx(expected.mean(), abs=1e-3)
        assert entry["return"]["iqm"] == pytest.approx(naive_iqm(expected), abs=1e-3)
        low, high = naive_bootstrap(entry["per_task_return"], statistic=np.mean, seed=entry["stage"])
        assert (entry["return"]["ci_low"], entry["return"]["ci_high"]) == pytest.approx((low, high), rel=1e-9)
        assert entry["success_rate"] is None  # Navigation2D defines no success flag
    scalars = evaluation_scalars(result)
    assert scalars["eval/return_stage_2"] == pytest.approx(expected.mean(), abs=1e-3)
    assert scalars["eval/adaptation_gain"] == pytest.approx(0.0, abs=1e-6)


def test_the_closed_form_itself_on_a_simple_goal():
    # Goal straight up at 0.35: distances after steps 1..4 are 0.25, 0.15, 0.05, 0 (ends at 4).
    assert closed_form_return([0.0, 0.35]) == pytest.approx(-(0.25 + 0.15 + 0.05))
    # Goal at 0.305: the third step leaves 0.005 < tolerance, so the episode ends there.
    assert closed_form_return([0.305, 0.0]) == pytest.approx(-(0.205 + 0.105 + 0.005))


# -------------------------------------------------------------- hand-made trajectories: success
def trajectories(returns_per_episode, success_per_episode=None, length=3):
    """Episodes of ``length`` steps with reward return/length each; success on the last step."""
    B = len(returns_per_episode)
    rewards = torch.tensor(returns_per_episode, dtype=torch.float32).repeat(length, 1) / length
    infos = {}
    if success_per_episode is not None:
        success = torch.zeros(length, B)
        success[-1] = torch.tensor(success_per_episode, dtype=torch.float32)
        infos["success"] = success
    return Trajectories(
        observations=torch.zeros(length, B, 1), actions=torch.zeros(length, B, 1), rewards=rewards,
        next_observations=torch.zeros(length, B, 1), terminated=torch.zeros(length, B, dtype=torch.bool),
        truncated=torch.zeros(length, B, dtype=torch.bool), mask=torch.ones(length, B), infos=infos,
    )


class ReplayAgent:
    adaptation_unit = "episode"
    meta_batch_size = 1

    def __init__(self, stages):
        self.stages = stages

    def adapt(self, tasks, sampler, *, num_stages, episodes_per_stage, generator):
        yield from self.stages


class CountingSampler:
    env_steps = 0


def test_success_rate_and_per_task_means():
    # 2 tasks x 2 episodes; task-major columns.
    stages = [trajectories([1.0, 3.0, 5.0, 7.0], [0, 0, 1, 0]),
              trajectories([2.0, 4.0, 6.0, 8.0], [1, 1, 1, 0])]
    result = meta_evaluate(ReplayAgent(stages), CountingSampler(), [{"a": 0}, {"a": 1}],
                           num_stages=1, episodes_per_stage=2, generator=torch.Generator())
    first, last = result["stages"]
    assert first["per_task_return"] == pytest.approx([2.0, 6.0])
    assert last["per_task_return"] == pytest.approx([3.0, 7.0])
    assert first["per_task_success"] == [0.0, 0.5] and last["per_task_success"] == [1.0, 0.5]
    assert last["success_rate"]["mean"] == pytest.approx(0.75)
    assert evaluation_scalars(result)["eval/success_rate_stage_1"] == pytest.approx(0.75)
    assert final_metrics(result) == pytest.approx({
        "hparams/return_before_adaptation": 4.0, "hparams/return_after_adaptation": 5.0,
        "hparams/return_iqm_after_adaptation": 5.0, "hparams/adaptation_gain": 1.0,
        "hparams/success_rate_after_adaptation": 0.75})
    table = format_table(result, title="replay")
    assert "success" in table and "75.00%" in table and "after k episodes" in table


def test_paired_difference_separates_stages_that_per_stage_cis_cannot():
    """Tasks spread widely, every task improves by about 1: the per-stage CIs overlap, the
    paired difference's CI excludes 0, and the table shows it beside stage 1."""
    rng = np.random.default_rng(0)
    before = rng.normal(scale=20.0, size=30)
    after = before + 1.0 + rng.normal(scale=0.1, size=30)
    stages = [trajectories(before.tolist()), trajectories(after.tolist())]
    result = meta_evaluate(ReplayAgent(stages), CountingSampler(), [{"a": i} for i in range(30)],
                           num_stages=1, episodes_per_stage=1, generator=torch.Generator())
    first, last = result["stages"][0]["return"], result["stages"][1]["return"]
    assert last["ci_low"] < first["ci_high"]  # unpaired: overlapping
    difference = paired_difference(result, 1)
    assert difference["mean"] == pytest.approx(np.mean(after - before))
    assert 0.9 < difference["ci_low"] < difference["mean"] < difference["ci_high"] < 1.1
    row = format_table(result).splitlines()[3]
    assert row.startswith("    1 |") and f"+{difference['mean']:.2f} [{difference['ci_low']:.2f}" in row


def test_protocol_violations_are_named():
    one_stage = [trajectories([1.0, 2.0])]
    with pytest.raises(MetaRLError, match="yielded 1 stages; the protocol asks for stage 0"):
        meta_evaluate(ReplayAgent(one_stage), CountingSampler(), [{"a": 0}], num_stages=1,
                      episodes_per_stage=2, generator=torch.Generator())
    with pytest.raises(MetaRLError, match="yielded 2 episodes at stage 0; the protocol asks for 1 tasks x 3"):
        meta_evaluate(ReplayAgent(one_stage), CountingSampler(), [{"a": 0}], num_stages=0,
                      episodes_per_stage=3, generator=torch.Generator())
    with pytest.raises(MetaRLError, match="no held-out tasks"):
        meta_evaluate(ReplayAgent(one_stage), CountingSampler(), [], num_stages=0,
                      episodes_per_stage=2, generator=torch.Generator())


def test_combine_seeds_pools_tasks_and_seeds():
    runs = []
    for offset in (0.0, 10.0):
        stages = [trajectories([1.0 + offset, 3.0 + offset], [1, 0]), trajectories([2.0 + offset, 4.0 + offset], [1, 1])]
        runs.append(meta_evaluate(ReplayAgent(stages), CountingSampler(), [{"a": 0}, {"a": 1}],
                                  num_stages=1, episodes_per_stage=1, generator=torch.Generator()))
    pooled = combine_seeds(runs)
    assert pooled["num_seeds"] == 2 and len(pooled["tasks"]) == 4
    assert pooled["stages"][1]["per_task_return"] == [2.0, 4.0, 12.0, 14.0]
    assert pooled["stages"][1]["return"] == summarize(np.array([2.0, 4.0, 12.0, 14.0]), seed=1)
    assert pooled["stages"][0]["success_rate"]["mean"] == 0.5
    assert "x 2 seeds" in format_table(pooled)


def test_compare_table_lays_runs_side_by_side():
    short = meta_evaluate(ReplayAgent([trajectories([1.0])]), CountingSampler(), [{"a": 0}],
                          num_stages=0, episodes_per_stage=1, generator=torch.Generator())
    long = meta_evaluate(ReplayAgent([trajectories([1.0]), trajectories([5.0])]), CountingSampler(),
                         [{"a": 0}], num_stages=1, episodes_per_stage=1, generator=torch.Generator())
    table = compare_table([("baseline", short), ("maml", long)]).splitlines()
    assert "stage 0" in table[0] and "stage 1" in table[0]
    assert table[2].startswith("baseline") and "1.00 [1.00, 1.00]" in table[2]
    assert table[3].startswith("maml") and "5.00 [5.00, 5.00]" in table[3]
    with pytest.raises(MetaRLError, match="nothing to compare"):
        compare_table([])


def test_table_footer_names_the_adaptation_unit_in_plural():
    from metarl.agent import plural_unit
    assert [plural_unit(u) for u in ("trajectory", "gradient step", "episode", "no-update stage")] == [
        "trajectories", "gradient steps", "episodes", "no-update stages"]
