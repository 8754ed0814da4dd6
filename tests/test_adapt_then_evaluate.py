"""Meta-World's protocol (metarl.adapt_then_evaluate) with hand-made episodes: which adapt call
each kind of agent gets, which episodes are scored, success at any step, per-class summaries,
and the family-declared protocol in a run's config.  Needs no ``metaworld``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import build_agent
from metarl.adapt_then_evaluate import (ProtocolOptions, adapt_then_evaluate, format_protocol_table,
                                        round_tasks)
from metarl.config import TrainConfig
from metarl.evaluate import combine_seeds, evaluation_scalars
from metarl.plots import per_class_figure
from metarl.tasks import MetaRLError, get_family
from metarl.rl_run import resolve_protocol
from metarl.trajectories import Trajectories

LENGTH = 4


def episodes(returns, success_step):
    """``[LENGTH, B]`` episodes with the given returns; ``success_step[b]`` the one step whose
    success flag is set (-1: none).  The flag drops again after that step, as Meta-World's may."""
    B = len(returns)
    success = torch.zeros(LENGTH, B)
    for b, step in enumerate(success_step):
        if step >= 0:
            success[step, b] = 1.0
    return Trajectories(
        observations=torch.zeros(LENGTH, B, 1), actions=torch.zeros(LENGTH, B, 1),
        rewards=torch.tensor(returns, dtype=torch.float32).repeat(LENGTH, 1) / LENGTH,
        next_observations=torch.zeros(LENGTH, B, 1), terminated=torch.zeros(LENGTH, B, dtype=torch.bool),
        truncated=torch.zeros(LENGTH, B, dtype=torch.bool), mask=torch.ones(LENGTH, B),
        infos={"success": success},
    )


class CountingSampler:
    env_steps = 0


class ScheduledAgent:
    """Succeeds (at step 1, the flag dropping after) only on tasks of class ``good`` and only once
    adapted: from stage 1 when a stage is a gradient step, else once ``adapted_after`` episodes
    of the sequence are played.  An episode's return is ``100 * stage + its column in the task``."""

    meta_batch_size = 1

    def __init__(self, unit: str, adapted_after: int = 0) -> None:
        self.adaptation_unit = unit
        self.adapted_after = adapted_after
        self.calls: list[tuple[int, int, int, int | None]] = []

    def adapt(self, tasks, sampler, *, num_stages, episodes_per_stage, generator, mean_actions_from=None):
        self.calls.append((len(tasks), num_stages, episodes_per_stage, mean_actions_from))
        for stage in range(num_stages + 1):
            adapted = stage >= (1 if self.adaptation_unit == "gradient step" else self.adapted_after)
            returns, steps = [], []
            for task in tasks:
                for column in range(episodes_per_stage):
                    returns.append(100.0 * stage + column)
                    steps.append(1 if adapted and task["env_name"] == "good" else -1)
            yield episodes(returns, steps)


def classes_of(num_good: int, num_bad: int) -> list[dict]:
    return ([{"env_name": "good", "index": i} for i in range(num_good)]
            + [{"env_name": "bad", "index": i} for i in range(num_bad)])


OPTIONS = ProtocolOptions(adaptation_episodes=10, evaluation_episodes=3, num_rounds=2,
                          tasks_per_round=4, goals_per_class=3)


def test_rounds_take_the_next_goals_of_every_class_cyclically_from_the_first_goals_per_class():
    tasks = classes_of(5, 5)
    first, second = round_tasks(tasks, OPTIONS, 0), round_tasks(tasks, OPTIONS, 1)
    assert [(t["env_name"], t["index"]) for t in first] == [("good", 0), ("good", 1), ("bad", 0), ("bad", 1)]
    # goals_per_class=3: goal 3 and 4 are never used, the third round would start again at 0
    assert [(t["env_name"], t["index"]) for t in second] == [("good", 2), ("good", 0), ("bad", 2), ("bad", 0)]


def test_a_sequence_agent_adapts_for_ten_episodes_and_only_the_next_three_are_scored():
    agent = ScheduledAgent("episode", adapted_after=10)
    result = adapt_then_evaluate(agent, CountingSampler(), classes_of(3, 3), options=OPTIONS,
                                 generator=torch.Generator())
    # one sequence of 13 episodes per task: stages 0..12, one episode each, per round; the
    # scored stages 10..12 act with the policy's mean
    assert agent.calls == [(4, 12, 1, 10), (4, 12, 1, 10)]
    assert result["num_tasks"] == 8 and result["protocol"] == "adapt_then_evaluate"
    after, before = result["stages"][1], result["stages"][0]
    # scored: stages 10, 11, 12 (returns 1000, 1100, 1200); before: the first episode
    np.testing.assert_allclose(after["per_task_return"], [1100.0] * 8)
    np.testing.assert_allclose(before["per_task_return"], [0.0] * 8)
    # success at step 1 counts though the flag is 0 at the episode's last step
    np.testing.assert_allclose(after["per_task_success"], [1, 1, 0, 0] * 2)
    assert after["success_rate"]["mean"] == 0.5 and before["success_rate"]["mean"] == 0.0
    assert result["classes"]["good"]["success_rate"]["mean"] == 1.0
    assert result["classes"]["bad"]["success_rate"]["mean"] == 0.0
    assert result["classes"]["good"]["num_tasks"] == 4


def test_an_agent_adapting_after_fewer_episodes_than_the_budget_is_scored_the_same():
    """RL² adapted after 2 episodes and an agent adapted after 10 score alike: the protocol
    scores the episodes after the budget, not how fast the agent got there."""
    fast = adapt_then_evaluate(ScheduledAgent("episode", adapted_after=2), CountingSampler(),
                               classes_of(3, 3), options=OPTIONS, generator=torch.Generator())
    late = adapt_then_evaluate(ScheduledAgent("episode", adapted_after=11), CountingSampler(),
                               classes_of(3, 3), options=OPTIONS, generator=torch.Generator())
    assert fast["stages"][1]["success_rate"]["mean"] == 0.5
    # adapted only from the 12th episode: one of the three scored episodes of a good task fails
    np.testing.assert_allclose(late["stages"][1]["per_task_success"], [2 / 3, 2 / 3, 0, 0] * 2)


def test_a_gradient_step_agent_adapts_from_one_batch_and_the_first_three_adapted_episodes_score():
    agent = ScheduledAgent("gradient step")
    result = adapt_then_evaluate(agent, CountingSampler(), classes_of(3, 3), options=OPTIONS,
                                 generator=torch.Generator())
    assert agent.calls == [(4, 1, 10, 1), (4, 1, 10, 1)]  # Meta-World's adaptation_steps=1
    # stage 1 columns 0, 1, 2 of every task: returns 100, 101, 102
    np.testing.assert_allclose(result["stages"][1]["per_task_return"], [101.0] * 8)
    np.testing.assert_allclose(result["stages"][0]["per_task_return"], [4.5] * 8)  # all 10 before
    assert result["episodes_before"] == 10
    assert result["stages"][1]["success_rate"]["mean"] == 0.5


def test_scalars_table_and_figure_show_every_class_and_the_overall_rate():
    result = adapt_then_evaluate(ScheduledAgent("episode", adapted_after=10), CountingSampler(),
                                 classes_of(3, 3), options=OPTIONS, generator=torch.Generator())
    scalars = evaluation_scalars(result, prefix="eval_train_classes")
    assert scalars["eval_train_classes/success_rate/good"] == 1.0
    assert scalars["eval_train_classes/success_rate/bad"] == 0.0
    assert scalars["eval_train_classes/success_rate_stage_1"] == 0.5
    table = format_protocol_table(result)
    rows = {line.split("|")[0].strip(): line for line in table.splitlines() if "|" in line}
    assert "100.0% [100.0%, 100.0%]" in rows["good"] and "0.0% [0.0%, 0.0%]" in rows["bad"]
    assert "50.0%" in rows["overall"] and "10 adaptation episodes, then 3 scored" in table
    figure = per_class_figure(result, train_classes=result, title="t")
    assert [ax.get_title() for ax in figure.axes] == ["training classes: 50% overall",
                                                      "held-out classes: 50% overall"]


def test_pooled_seeds_keep_the_protocol_and_recompute_the_classes():
    results = [adapt_then_evaluate(ScheduledAgent("episode", adapted_after=after), CountingSampler(),
                                   classes_of(3, 3), options=OPTIONS, generator=torch.Generator())
               for after in (10, 12)]
    pooled = combine_seeds(results)
    assert pooled["protocol"] == "adapt_then_evaluate" and pooled["num_seeds"] == 2
    # seed 0: good tasks all succeed; seed 1 (adapted from the 13th episode): 1 of 3 episodes
    assert pooled["classes"]["good"]["success_rate"]["mean"] == pytest.approx((1 + 1 / 3) / 2)
    assert pooled["classes"]["good"]["num_tasks"] == 8


def test_scored_actions_sample_asks_no_stage_for_the_mean_and_the_table_says_which():
    for unit in ("episode", "gradient step"):
        agent = ScheduledAgent(unit)
        result = adapt_then_evaluate(agent, CountingSampler(), classes_of(1, 1),
                                     options=replace(OPTIONS, scored_actions="sample"),
                                     generator=torch.Generator())
        assert [call[3] for call in agent.calls] == [None, None]
        assert "3 scored with sampled actions" in format_protocol_table(result)
    result = adapt_then_evaluate(ScheduledAgent("episode"), CountingSampler(), classes_of(1, 1),
                                 options=OPTIONS, generator=torch.Generator())
    assert "3 scored with the policy's mean action" in format_protocol_table(result)


def test_bad_options_and_an_agent_that_breaks_the_schedule_are_named():
    with pytest.raises(MetaRLError, match="evaluation.scored_actions='mode' is not known; accepted: mean, sample"):
        adapt_then_evaluate(ScheduledAgent("episode"), CountingSampler(), classes_of(1, 1),
                            options=replace(OPTIONS, scored_actions="mode"), generator=torch.Generator())
    with pytest.raises(MetaRLError, match="evaluation.evaluation_episodes must be at least 1"):
        adapt_then_evaluate(ScheduledAgent("episode"), CountingSampler(), classes_of(1, 1),
                            options=replace(OPTIONS, evaluation_episodes=0), generator=torch.Generator())

    class ShortAgent(ScheduledAgent):
        def adapt(self, tasks, sampler, *, num_stages, episodes_per_stage, generator, mean_actions_from=None):
            yield from list(super().adapt(tasks, sampler, num_stages=num_stages,
                                          episodes_per_stage=episodes_per_stage, generator=generator))[:3]

    with pytest.raises(MetaRLError, match="yielded 3 stages; the adapt_then_evaluate protocol asked for 13"):
        adapt_then_evaluate(ShortAgent("episode"), CountingSampler(), classes_of(1, 1), options=OPTIONS,
                            generator=torch.Generator())


def test_the_family_declares_its_protocol_and_the_run_config_records_the_resolved_one():
    family = get_family("Navigation2D")
    assert family.evaluation_protocol == "stages"
    assert resolve_protocol(TrainConfig(), family).evaluation.protocol == "stages"
    declared = replace(family, evaluation_protocol="adapt_then_evaluate")
    assert resolve_protocol(TrainConfig(), declared).evaluation.protocol == "adapt_then_evaluate"
    forced = TrainConfig(evaluation=replace(TrainConfig().evaluation, protocol="stages"))
    assert resolve_protocol(forced, declared).evaluation.protocol == "stages"
    unknown = TrainConfig(evaluation=replace(TrainConfig().evaluation, protocol="official"))
    with pytest.raises(MetaRLError, match="evaluation.protocol 'official'; accepted: auto, stages, adapt_then_evaluate"):
        resolve_protocol(unknown, family)


def test_keys_of_the_other_protocol_are_an_error_not_ignored():
    from metarl.config import load_config
    from metarl.rl_run import resolve_protocol
    from metarl.tasks import get_family

    navigation = get_family("Navigation2D")  # its own protocol: stages
    config = load_config(None, ["env=Navigation2D", "evaluation.num_rounds=2"])
    with pytest.raises(MetaRLError, match=r"evaluation.num_rounds only apply to "
                       r"evaluation.protocol=adapt_then_evaluate, and the protocol here is 'stages' "
                       r"\(the family's own\)"):
        resolve_protocol(config, navigation)
    config = load_config(None, ["env=Navigation2D", "evaluation.protocol=adapt_then_evaluate",
                                "evaluation.num_tasks=10"])
    with pytest.raises(MetaRLError, match=r"evaluation.num_tasks only apply to evaluation.protocol="
                       r"stages, and the protocol here is 'adapt_then_evaluate'; its tasks are "
                       r"evaluation.num_rounds x evaluation.tasks_per_round"):
        resolve_protocol(config, navigation)
    # The keys of the protocol in use are fine, and so are the defaults of the other.
    config = load_config(None, ["env=Navigation2D", "evaluation.num_tasks=10"])
    assert resolve_protocol(config, navigation).evaluation.protocol == "stages"


@pytest.mark.parametrize("name, options", [
    ("maml_trpo", {"hidden_sizes": [8]}), ("reptile", {"hidden_sizes": [8]}),
    ("rl2", {"hidden_size": 8, "head_sizes": [8]}), ("multitask_trpo", {"hidden_sizes": [8]}),
])
def test_an_agent_told_to_act_with_its_mean_draws_no_action_noise(name, options):
    """``mean_actions_from=0``: every stage (MAML's adapted one too, RL²'s whole trial) plays the
    policy's mean, so two action-noise generators give the same episodes; without it they differ."""
    from metarl.rollout import Sampler
    from metarl.tasks import TaskSampler
    family = get_family("Navigation2D")
    agent = build_agent(name, family, **options)
    tasks = TaskSampler(family, seed=0).held_out("test")[:2]

    def actions(seed: int, mean_from):
        sampler = Sampler(family, seed=0)
        try:
            return [t.actions for t in agent.adapt(tasks, sampler, num_stages=2, episodes_per_stage=2,
                                                   generator=torch.Generator().manual_seed(seed),
                                                   mean_actions_from=mean_from)]
        finally:
            sampler.close()

    sampled = actions(1, None), actions(2, None)
    assert all(not torch.equal(a, b) for a, b in zip(*sampled))
    mean = actions(1, 0), actions(2, 0)
    assert all(torch.equal(a, b) for a, b in zip(*mean))
    partly = actions(1, 1), actions(2, 1)
    assert not torch.equal(partly[0][0], partly[1][0])  # stage 0 still samples
    if name == "multitask_trpo":  # no adaptation: from stage 1 on, the one policy's mean
        assert all(torch.equal(a, b) for a, b in zip(partly[0][1:], partly[1][1:]))


def test_pearl_acts_with_its_mean_from_the_stage_it_is_told():
    """PEARL with ``eval_deterministic=False`` samples its actions until ``mean_actions_from``."""
    from metarl.agents import pearl as pearl_module
    from metarl.rollout import Sampler
    from metarl.tasks import TaskSampler
    family = get_family("PointRobot-Dense")
    agent = build_agent("pearl", family, hidden_sizes=[8], encoder_hidden_sizes=[8], latent_dim=2,
                         eval_deterministic=False)
    tasks = TaskSampler(family, seed=0).held_out("test")[:2]
    flags = []

    class Recording(pearl_module._LatentActor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            flags.append(self.deterministic)

    sampler = Sampler(family, seed=0)
    original = pearl_module._LatentActor
    pearl_module._LatentActor = Recording
    try:
        list(agent.adapt(tasks, sampler, num_stages=3, episodes_per_stage=1,
                         generator=torch.Generator().manual_seed(0), mean_actions_from=2))
    finally:
        pearl_module._LatentActor = original
        sampler.close()
    assert flags == [False, False, True, True]


def test_a_run_written_before_scored_actions_keeps_its_sampled_scoring(tmp_path):
    """A Meta-World-protocol run whose config.yaml predates ``evaluation.scored_actions`` scored
    sampled actions: loading or resuming it keeps that (new runs default to the mean); a run
    under the stages protocol, which has no such key, loads as it was."""
    import yaml

    from metarl.checkpoint import check_compatible
    from metarl.config import load_config, to_dict
    for protocol, expected in (("adapt_then_evaluate", "sample"), ("stages", "mean")):
        tree = to_dict(load_config(None, ["agent=random", f"evaluation.protocol={protocol}"]))
        assert tree["evaluation"].pop("scored_actions") == "mean"
        path = tmp_path / f"{protocol}.yaml"
        path.write_text(yaml.safe_dump(tree))
        loaded = load_config(path, run_config=True)
        assert loaded.evaluation.scored_actions == expected
        check_compatible(tree, to_dict(loaded))  # its checkpoints resume under it


def test_a_round_is_played_in_waves_of_tasks_per_call_with_the_same_scores_for_a_memoryless_agent():
    """``tasks_per_call`` caps the tasks of one ``adapt`` call (each holds sub-envs of its own):
    a round of 4 is played as calls of 3 and 1, the tasks in the same order; an agent whose
    episodes do not depend on the batch scores exactly as in one call."""
    whole, waves = ScheduledAgent("gradient step"), ScheduledAgent("gradient step")
    one = adapt_then_evaluate(whole, CountingSampler(), classes_of(3, 3), options=OPTIONS,
                              generator=torch.Generator())
    split = adapt_then_evaluate(waves, CountingSampler(), classes_of(3, 3),
                                options=replace(OPTIONS, tasks_per_call=3), generator=torch.Generator())
    assert [call[0] for call in whole.calls] == [4, 4]
    assert [call[0] for call in waves.calls] == [3, 1, 3, 1]
    assert split["tasks"] == one["tasks"] and split["protocol_options"]["tasks_per_call"] == 3
    for stage in (0, 1):
        for key in ("per_task_return", "per_task_success"):
            np.testing.assert_array_equal(split["stages"][stage][key], one["stages"][stage][key])
    with pytest.raises(MetaRLError, match="evaluation.tasks_per_call must be 0 .* or a positive number of tasks; got -1"):
        adapt_then_evaluate(ScheduledAgent("episode"), CountingSampler(), classes_of(1, 1),
                            options=replace(OPTIONS, tasks_per_call=-1), generator=torch.Generator())


def test_waves_cap_the_sub_envs_a_real_agent_asks_for_and_stay_deterministic():
    """MAML-TRPO on Navigation2D under the protocol: a round of 6 tasks x 4 adaptation
    episodes asks the sampler for 24 sub-envs in one call, at most 2 x 4 with
    ``tasks_per_call=2``; the same seed gives the same numbers."""
    from metarl.rollout import Sampler

    family = get_family("Navigation2D")

    class RecordingSampler(Sampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.asked = []

        def env(self, num_envs):
            self.asked.append(num_envs)
            return super().env(num_envs)

    options = ProtocolOptions(adaptation_episodes=4, evaluation_episodes=2, num_rounds=1,
                              tasks_per_round=6, goals_per_class=6)
    tasks = family.sample_tasks(np.random.default_rng(0), 6)

    def run(per_call):
        agent = build_agent("maml_trpo", family, hidden_sizes=[8])
        sampler = RecordingSampler(family, seed=3)
        result = adapt_then_evaluate(agent, sampler, tasks, options=replace(options, tasks_per_call=per_call),
                                     generator=torch.Generator().manual_seed(1))
        return result, sampler.asked

    (one, asked_one), (split, asked_split) = run(0), run(2)
    assert max(asked_one) == 24 and max(asked_split) == 8
    again, _ = run(2)
    np.testing.assert_array_equal(split["stages"][1]["per_task_return"], again["stages"][1]["per_task_return"])
    assert split["num_tasks"] == one["num_tasks"] == 6
