"""RL²: memory across the episodes of a trial, GAE over trials, PPO, whole runs, learning."""

import time

import numpy as np
import pytest
import torch

from metarl.agents.rl2 import (
    RL2, RL2Config, RecurrentActorCritic, RunningNormalizer, TrialActor, clipped_surrogate_loss,
    concatenate_episodes, normalize_actions, trial_advantages, trial_ends, trial_inputs,
)
from metarl.config import load_config
from metarl.logger import read_metrics
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, TaskFamily
from metarl.train import evaluate_run, load_run, train
from metarl.trajectories import Trajectories


# ------------------------------------------------------------------------------ a toy family
class CountdownVectorEnv:
    """Observation ``[task, t]``; the episode terminates after ``task["length"]`` steps, or is
    truncated at the horizon of 6.  Reward ``t + 10 * action[0]``, so rewards tell actions apart."""

    observation_dim = 2
    action_dim = 2
    max_episode_steps = 6

    def __init__(self, num_envs, *, seed=0):
        self.num_envs = num_envs
        self.action_low = np.full(2, -2.0, dtype=np.float32)
        self.action_high = np.full(2, 2.0, dtype=np.float32)
        self.lengths = np.zeros(num_envs)
        self.t = 0

    def set_tasks(self, tasks):
        self.lengths = np.array([task["length"] for task in tasks], dtype=np.float32)

    def reset(self, *, seed=None):
        self.t = 0
        return self._observations()

    def _observations(self):
        return np.stack([self.lengths, np.full(self.num_envs, self.t)], 1).astype(np.float32)

    def step(self, actions):
        self.t += 1
        rewards = (self.t + 10.0 * np.clip(actions[:, 0], -2, 2)).astype(np.float32)
        terminated = self.t >= self.lengths
        truncated = np.full(self.num_envs, self.t >= self.max_episode_steps) & ~terminated
        return self._observations(), rewards, terminated, truncated, {}

    def close(self):
        pass


COUNTDOWN = TaskFamily(
    name="Countdown", description="test family", citation="none",
    sample_tasks=lambda rng, n: [{"length": int(x)} for x in rng.integers(2, 9, size=n)],
    make_vector_env=lambda num_envs, *, seed=0, **_: CountdownVectorEnv(num_envs, seed=seed),
    max_episode_steps=6, num_test_tasks=2,
)
TASKS = [{"length": 3}, {"length": 9}]  # one terminates at step 3, one is truncated at step 6


def tiny_agent(**overrides) -> RL2:
    options = dict(meta_batch_size=2, trials_per_task=2, hidden_size=8, head_sizes=(8,),
                   num_minibatches=2, init_std=0.5)
    options.update(overrides)
    return RL2(RL2Config(**options), observation_dim=2, action_dim=2, device=torch.device("cpu"),
               generator=torch.Generator().manual_seed(0))


class RecordingActor(TrialActor):
    """Records, per sub-env and real step, the state the step started from and the mean action."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.states = [[] for _ in range(self.hidden.shape[0])]
        self.means = [[] for _ in range(self.hidden.shape[0])]

    def act(self, observations):
        state_before = self.hidden.clone()
        active = self.active.clone()
        actions = super().act(observations)
        mean = self.network.step(self.inputs_before, state_before)[0].mean
        for b in range(len(active)):
            if active[b]:
                self.states[b].append(state_before[b])
                self.means[b].append(mean[b])
        return actions

    def inputs(self, observations):
        self.inputs_before = super().inputs(observations)
        return self.inputs_before


def run_recorded_trial(agent, num_episodes, seed=0):
    sampler = Sampler(COUNTDOWN, seed=seed)
    env = sampler.env(len(TASKS))
    actor = RecordingActor(agent.network, num_envs=env.num_envs, action_low=env.action_low,
                           action_high=env.action_high, generator=torch.Generator().manual_seed(seed))
    episodes = []
    for _ in range(num_episodes):
        actor.start_episode()
        episodes.append(sampler.sample(TASKS, actor, episodes_per_task=1))
    return actor, episodes, env


# ------------------------------------------------------------------------------ the memory
def test_hidden_state_carries_across_episodes_and_resets_at_trial_boundaries():
    agent = tiny_agent()
    actor, episodes, _ = run_recorded_trial(agent, num_episodes=3)
    lengths = [[int(e.episode_lengths()[b]) for e in episodes] for b in range(2)]
    assert lengths == [[3, 3, 3], [6, 6, 6]]
    for b in range(2):
        states = actor.states[b]
        assert torch.equal(states[0], torch.zeros(8))  # a trial starts from a zero state
        for k in (1, 2):
            first_step = sum(lengths[b][:k])
            # The first step of episode k starts from the state after the last step of episode
            # k - 1: nothing was reset at the episode boundary.
            assert states[first_step].abs().sum() > 0
            assert not torch.equal(states[first_step], states[first_step - 1])
        # Steps are recorded only while the sub-env's episode runs: exactly the recorded steps.
        assert len(states) == sum(lengths[b])
    # A new trial (a new actor) starts from zeros again, whatever came before.
    fresh, _, _ = run_recorded_trial(agent, num_episodes=1)
    assert torch.equal(fresh.states[0][0], torch.zeros(8))
    assert torch.allclose(fresh.means[0][0], actor.means[0][0])
    # The agent's own trials, back to back on one sampler: with the same action noise, the
    # second trial starts exactly as the first did (nothing leaks from trial to trial).
    sampler = Sampler(COUNTDOWN, seed=0)
    trials = [list(agent.run_trial(TASKS, sampler, num_episodes=2, trials_per_task=1,
                                   generator=torch.Generator().manual_seed(3))) for _ in range(2)]
    assert torch.equal(trials[0][0].actions, trials[1][0].actions)
    assert torch.equal(trials[0][1].actions, trials[1][1].actions)


def test_update_recomputes_exactly_the_states_seen_during_the_rollout():
    """The update runs the GRU over the concatenated trial from a zero state; that must give
    the rollout's outputs at every step, across episode ends and the frozen padded steps."""
    agent = tiny_agent()
    actor, episodes, env = run_recorded_trial(agent, num_episodes=3)
    trial = concatenate_episodes(episodes)
    low, high = torch.as_tensor(env.action_low), torch.as_tensor(env.action_high)
    inputs = trial_inputs(trial, normalize_actions(trial.actions, low, high))
    with torch.no_grad():
        means = agent.network.distribution(agent.network.features(inputs[: trial.num_steps])).mean
    for b in range(2):
        recorded = torch.stack(actor.means[b])
        assert recorded.shape[0] == int(trial.mask[:, b].sum())
        assert torch.allclose(means[: recorded.shape[0], b], recorded, atol=1e-6)


def test_policy_input_holds_previous_action_reward_and_done_flag():
    agent = tiny_agent()
    _, episodes, env = run_recorded_trial(agent, num_episodes=2)
    trial = concatenate_episodes(episodes)
    low, high = torch.as_tensor(env.action_low), torch.as_tensor(env.action_high)
    normalized = normalize_actions(trial.actions, low, high)
    inputs = trial_inputs(trial, normalized)
    assert inputs.shape == (trial.num_steps + 1, 2, 2 + 2 + 2)
    assert torch.equal(inputs[0, :, 2:], torch.zeros(2, 4))  # nothing before the first step
    b, last = 0, 2  # column 0: episode 0 is steps 0..2, episode 1 starts at step 3
    first = inputs[last + 1, b]
    assert torch.equal(first[:2], episodes[1].observations[0, b])  # the new episode's o_0
    assert torch.equal(first[2:4], normalized[last, b])  # a_{t-1}: the old episode's last action
    assert first[4] == trial.rewards[last, b]  # r_{t-1}
    assert first[5] == 1.0  # d_{t-1}: an episode just ended
    assert inputs[last, b, 5] == 0.0 and inputs[last + 2, b, 5] == 0.0
    # One past the trial's end: s' of the last step, with d = 0 (the value bootstraps there).
    end = int(trial.mask[:, 1].sum())
    assert torch.equal(inputs[end, 1, :2], trial.next_observations[end - 1, 1])
    assert inputs[end, 1, 5] == 0.0
    # The actor builds the same input online, and the action depends on each of its parts.
    actor = TrialActor(agent.network, num_envs=1, action_low=env.action_low,
                       action_high=env.action_high, generator=torch.Generator().manual_seed(0))
    observation = torch.tensor([[3.0, 0.0]])
    actor.observe_step(torch.tensor([[1.0, -4.0]]), torch.tensor([0.5]), torch.tensor([True]),
                       torch.tensor([False]))
    # The sampler's env acts in [-1, 1] (the family's [-2, 2] is rescaled): 1.0 stays, -4.0 clips.
    assert torch.equal(actor.inputs(observation), torch.tensor([[3.0, 0.0, 1.0, -1.0, 0.5, 1.0]]))
    base = actor.inputs(observation)
    state = agent.network.initial_state(1)
    mean = agent.network.step(base, state)[0].mean
    for column in (2, 4, 5):
        changed = base.clone()
        changed[0, column] += 1.0
        assert not torch.allclose(agent.network.step(changed, state)[0].mean, mean)


def test_concatenate_episodes_packs_each_column_without_gaps():
    def batch(lengths, value):
        T, B = max(lengths), len(lengths)
        mask = torch.tensor([[1.0 if t < n else 0.0 for n in lengths] for t in range(T)])
        rewards = (value + torch.arange(T).unsqueeze(1).float()) * mask
        ends = torch.tensor([[t == n - 1 for n in lengths] for t in range(T)])
        return Trajectories(
            observations=rewards.unsqueeze(-1), actions=rewards.unsqueeze(-1), rewards=rewards,
            next_observations=rewards.unsqueeze(-1) + 1, terminated=ends & (torch.arange(B) == 0),
            truncated=ends & (torch.arange(B) == 1), mask=mask, infos={"x": rewards},
        )

    trial = concatenate_episodes([batch([2, 3], 10.0), batch([3, 1], 20.0)])
    assert trial.num_steps == 5
    assert trial.rewards[:, 0].tolist() == [10, 11, 20, 21, 22]
    assert trial.rewards[:, 1].tolist() == [10, 11, 12, 20, 0]
    assert trial.mask[:, 1].tolist() == [1, 1, 1, 1, 0]
    assert trial.terminated[:, 0].tolist() == [False, True, False, False, True]
    assert trial.truncated[:, 1].tolist() == [False, False, True, True, False]
    assert torch.equal(trial.infos["x"], trial.rewards)
    assert trial_ends(trial.mask)[:, 1].tolist() == [False, False, False, True, False]


# ------------------------------------------------------------------------------ GAE over trials
def naive_trial_gae(rewards, values, terminated, lengths, discount, lam):
    """Per column, a loop over the trial with every next value the next step's (Duan et al.:
    the trial is one episode), the bootstrap after the last step unless it terminated."""
    T, B = rewards.shape
    advantages = torch.zeros(T, B, dtype=torch.float64)
    for b in range(B):
        n = lengths[b]
        running = 0.0
        for t in reversed(range(n)):
            next_value = 0.0 if (t == n - 1 and terminated[t, b]) else values[t + 1, b]
            delta = rewards[t, b] + discount * next_value - values[t, b]
            running = delta + discount * lam * running
            advantages[t, b] = running
    return advantages


def test_trial_advantages_match_a_naive_loop_and_run_through_inner_episode_ends():
    g = torch.Generator().manual_seed(0)
    T, B = 7, 3
    lengths = [7, 5, 6]
    mask = torch.tensor([[float(t < n) for n in lengths] for t in range(T)], dtype=torch.float64)
    rewards = torch.randn(T, B, generator=g, dtype=torch.float64) * mask
    values = torch.randn(T + 1, B, generator=g, dtype=torch.float64)
    terminated = torch.zeros(T, B, dtype=torch.bool)
    terminated[2, 0] = True  # an inner episode terminates inside trial 0: no effect on GAE
    terminated[4, 1] = True  # trial 1's last episode terminated: no bootstrap at its end
    advantages = trial_advantages(rewards, values, terminated, mask, discount=0.9, gae_lambda=0.8)
    expected = naive_trial_gae(rewards, values, terminated, lengths, 0.9, 0.8)
    assert torch.allclose(advantages, expected)
    assert torch.all(advantages[5:, 1] == 0)

    # Through the episode end inside trial 0: a reward in its second episode reaches step 0.
    later = rewards.clone()
    later[5, 0] += 1.0
    shifted = trial_advantages(later, values, terminated, mask, discount=0.9, gae_lambda=0.8)
    assert shifted[0, 0] - advantages[0, 0] == pytest.approx((0.9 * 0.8) ** 5)
    # Never across trials: other columns are untouched.
    assert torch.equal(shifted[:, 1:], advantages[:, 1:])


def test_trial_end_bootstraps_on_truncation_only():
    mask = torch.ones(3, 2)
    rewards = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    values = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    terminated = torch.tensor([[False, False], [False, False], [False, True]])
    advantages = trial_advantages(rewards, values, terminated, mask, discount=0.5, gae_lambda=1.0)
    assert advantages[2].tolist() == [1.0 + 0.5 * 5.0, 1.0]


def test_advantages_of_a_real_trial_flow_across_the_episode_boundary():
    agent = tiny_agent(gae_lambda=1.0, discount=1.0, normalize_advantages=False, reward_scale=1.0)
    _, episodes, env = run_recorded_trial(agent, num_episodes=2)
    trial = concatenate_episodes(episodes)
    batch = agent._batch(trial, torch.as_tensor(env.action_low), torch.as_tensor(env.action_high))
    # γ = λ = 1: return targets are the undiscounted rewards-to-go of the whole trial for the
    # column whose last episode terminated (no bootstrap), including the second episode.
    to_go = trial.rewards[:, 0].flip(0).cumsum(0).flip(0)
    assert torch.allclose(batch.returns[:, 0], to_go, atol=1e-4)


# ------------------------------------------------------------------------------ PPO pieces
def test_clipped_surrogate_matches_formula_and_stops_gradient_outside_the_clip():
    ratio = torch.tensor([[0.5, 1.1, 1.5, 0.7]], requires_grad=True)
    advantages = torch.tensor([[1.0, 1.0, 1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss = clipped_surrogate_loss(ratio, advantages, mask, clip_ratio=0.2)
    expected = -(0.5 * 1 + 1.1 * 1 + 1.2 * 1 + 0.8 * -1) / 4
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    # Positive advantage above 1 + ε and negative advantage below 1 - ε: no incentive to move.
    assert ratio.grad[0].tolist() == pytest.approx([-0.25, -0.25, 0.0, 0.0])


def test_truncated_backpropagation_cuts_gradients_but_not_the_forward_pass():
    network = RecurrentActorCritic(3, 1, config=RL2Config(hidden_size=4),
                                   generator=torch.Generator().manual_seed(0))
    inputs = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    full = network.features(inputs)
    truncated = network.features(inputs, truncation_length=4)
    assert torch.allclose(full, truncated)
    (gradient,) = torch.autograd.grad(truncated[5].sum(), inputs)
    assert torch.all(gradient[:4] == 0) and gradient[4:].abs().sum() > 0
    (gradient,) = torch.autograd.grad(full[5].sum(), inputs)
    assert gradient[:4].abs().sum() > 0


def test_ppo_update_raises_the_surrogate_within_the_trust_region():
    agent = tiny_agent(num_epochs=8, learning_rate=3e-3)
    sampler = Sampler(COUNTDOWN, seed=0)
    episodes = list(agent.run_trial(TASKS, sampler, num_episodes=2, trials_per_task=4,
                                    generator=torch.Generator().manual_seed(1)))
    assert sampler.env_steps == 2 * 4 * (3 + 6)  # 2 episodes × 4 trials per task
    env = sampler.env(8)
    batch = agent._batch(concatenate_episodes(episodes), torch.as_tensor(env.action_low),
                         torch.as_tensor(env.action_high))

    def surrogate_and_kl():
        with torch.no_grad():
            features = agent.network.features(batch.inputs[:-1])
            log_probs = agent.network.distribution(features).log_prob(batch.actions).sum(-1)
            log_ratio = log_probs - batch.old_log_probs
            surrogate = (log_ratio.exp() * batch.advantages * batch.mask).sum() / batch.mask.sum()
            kl = ((log_ratio.exp() - 1 - log_ratio) * batch.mask).sum() / batch.mask.sum()
        return surrogate.item(), kl.item()

    sampler.close()  # its 8 sub-envs ran on worker processes
    assert surrogate_and_kl() == pytest.approx((0.0, 0.0), abs=1e-5)  # old policy = new policy
    stats = agent._ppo_update(batch)
    surrogate, kl = surrogate_and_kl()
    assert surrogate > 0.02  # the policy moved towards the advantageous actions
    assert 0 < kl < 0.2  # but not far: the clipped objective gives no incentive beyond 1 ± ε
    assert stats["loss/clip_fraction"] > 0


def countdown_batch(agent):
    """A batch of trials of 2 episodes, 4 per task, on the two Countdown tasks (T = 12)."""
    sampler = Sampler(COUNTDOWN, seed=0)
    try:
        episodes = list(agent.run_trial(TASKS, sampler, num_episodes=2, trials_per_task=4,
                                        generator=torch.Generator().manual_seed(1)))
        env = sampler.env(8)
        low, high = torch.as_tensor(env.action_low), torch.as_tensor(env.action_high)
    finally:
        sampler.close()
    return agent._batch(concatenate_episodes(episodes), low, high)


def test_chunks_start_from_the_hidden_state_the_rollout_had_there():
    """minibatch=chunks: each 4-step chunk, run from its stored start state, gives the policy the
    rollout computed (the update's first ratio is 1 on every step), and only chunks holding a
    step are columns (the terminated task's trials are 6 steps: its third chunk is empty)."""
    agent = tiny_agent(minibatch="chunks", truncation_length=4)
    batch = countdown_batch(agent)
    assert batch.mask.shape == (12, 8) and batch.states.shape == (3, 8, 8)
    steps, states = agent._columns(batch)
    assert steps["mask"].shape == (4, 3 * 8 - 4) and states.shape == (20, 8)
    assert steps["mask"].sum() == batch.mask.sum()
    with torch.no_grad():
        features = agent.network.features_from(steps["inputs"], states)
        log_probs = agent.network.distribution(features).log_prob(steps["actions"]).sum(-1)
    valid = steps["mask"] > 0
    assert torch.allclose(log_probs[valid], steps["old_log_probs"][valid], atol=1e-5)
    assert not torch.allclose(states[8:], torch.zeros_like(states[8:]))  # later chunks start mid-trial


def test_one_chunk_per_trial_is_the_whole_trial_update():
    """truncation_length >= T: a chunk is a whole trial from the zero state, and both minibatch
    kinds draw the same minibatches, so one update gives the same parameters."""
    networks = []
    for minibatch in ("trials", "chunks"):
        agent = tiny_agent(minibatch=minibatch, truncation_length=12, num_epochs=3)
        agent._ppo_update(countdown_batch(agent))
        networks.append(agent.network.state_dict())
    for name, value in networks[0].items():
        assert torch.allclose(value, networks[1][name], atol=1e-6), name


def test_adapt_yields_one_batch_per_episode_of_the_trial_and_keeps_the_parameters():
    agent = tiny_agent()
    before = {k: v.clone() for k, v in agent.network.state_dict().items()}
    sampler = Sampler(COUNTDOWN, seed=0)
    stages = list(agent.adapt(TASKS, sampler, num_stages=2, episodes_per_stage=3,
                              generator=torch.Generator().manual_seed(0)))
    assert agent.adaptation_unit == "episode"
    assert len(stages) == 3 and all(s.num_episodes == 6 for s in stages)
    assert all(torch.equal(before[k], v) for k, v in agent.network.state_dict().items())


def test_running_normalizer_matches_the_statistics_of_everything_seen():
    data = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * 4 + 2
    normalizer = RunningNormalizer(3)
    assert torch.equal(normalizer(data), data.clamp(-10, 10))  # identity before any update
    for chunk in data.split([7, 30, 13]):
        normalizer.update(chunk)
    assert torch.allclose(normalizer.mean.float(), data.mean(0), atol=1e-5)
    assert torch.allclose(normalizer.variance.float(), data.var(0, unbiased=False), atol=1e-4)
    normalized = normalizer(data)
    assert torch.allclose(normalized.mean(0), torch.zeros(3), atol=1e-5)


def test_config_errors_name_the_option():
    with pytest.raises(MetaRLError, match="agent_options.num_minibatches"):
        tiny_agent(num_minibatches=5)
    with pytest.raises(MetaRLError, match="agent_options.activation"):
        tiny_agent(activation="gelu")
    with pytest.raises(MetaRLError, match="agent_options.minibatch 'chunk'; accepted: trials, chunks"):
        tiny_agent(minibatch="chunk")
    with pytest.raises(MetaRLError, match="set truncation_length > 0"):
        tiny_agent(minibatch="chunks")
    tiny_agent(minibatch="chunks", truncation_length=4, num_minibatches=5)  # 5 > 4 trials: chunks allow it
    with pytest.raises(MetaRLError, match="unknown config key 'agent_options.num_layers'"):
        load_config(None, ["agent=rl2", "agent_options.num_layers=2"])


def test_parameters_come_from_the_generator_not_the_global_rng():
    state = torch.get_rng_state()
    a, b = tiny_agent(), tiny_agent()
    assert torch.equal(state, torch.get_rng_state())
    for (name, x), (_, y) in zip(a.state_dict()["network"].items(), b.state_dict()["network"].items()):
        assert torch.equal(x, y), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_updates_on_the_gpu_match_the_cpu():
    cpu = tiny_agent()
    gpu = RL2(cpu.config, observation_dim=2, action_dim=2, device=torch.device("cuda"),
              generator=torch.Generator().manual_seed(0))
    a = cpu.train_iteration(TASKS, Sampler(COUNTDOWN, seed=0))
    b = gpu.train_iteration(TASKS, Sampler(COUNTDOWN, seed=0))
    assert next(gpu.network.parameters()).is_cuda
    assert a["train/return_episode_0"] == b["train/return_episode_0"]
    assert a["loss/value"] == pytest.approx(b["loss/value"], rel=1e-3)


# ------------------------------------------------------------------------------ whole runs
RL2_TINY = [
    "agent=rl2", "num_iterations=3", "checkpoint_interval=1", "evaluation.interval=2",
    "evaluation.num_tasks=4", "evaluation.num_stages=1", "evaluation.episodes_per_stage=2",
    "agent_options.meta_batch_size=4", "agent_options.trials_per_task=2",
    "agent_options.hidden_size=8", "agent_options.head_sizes=[8]", "agent_options.num_epochs=2",
    "agent_options.num_minibatches=2", "agent_options.truncation_length=50",
    "agent_options.normalize_observations=true", "progress=false",
]


def run(tmp_path, name, extra=()):
    return train(load_config(None, [*RL2_TINY, f"run_dir={tmp_path / name}", *extra]), quiet=True)


def strip(metrics):
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in metrics]


def test_smoke_run_same_seed_same_numbers_and_exact_resume(tmp_path):
    full = read_metrics(run(tmp_path, "full"))
    assert [m["iteration"] for m in full] == [1, 2, 3]
    assert "eval/return_stage_1" in full[1] and "train/return_episode_1" in full[0]
    assert strip(read_metrics(run(tmp_path, "again"))) == strip(full)
    assert strip(read_metrics(run(tmp_path, "seed1", ["seed=1"]))) != strip(full)

    cut = run(tmp_path, "cut", ["num_iterations=2"])
    (cut / "checkpoints" / "iteration_000002.pt").unlink()  # interrupted after iteration 1
    train(load_config(cut / "config.yaml", ["num_iterations=3"]), resume_from=cut, quiet=True)
    assert strip(read_metrics(cut)) == strip(full)

    first, iteration = load_run(tmp_path / "full")
    second, _ = load_run(tmp_path / "full")
    assert evaluate_run(first, iteration=iteration) == evaluate_run(second, iteration=iteration)


# ------------------------------------------------------------------------------ learning
@pytest.mark.slow
def test_rl2_learns_to_find_the_goal_in_the_second_episode_of_a_trial(tmp_path):
    """configs/rl2_navigation.yaml: 40 held-out goals, trials of 2 episodes, ~0.4M env steps."""
    def config(name, *extra):
        return load_config("configs/rl2_navigation.yaml",
                           [f"run_dir={tmp_path / name}", "progress=false", *extra])

    start = time.perf_counter()
    metrics = read_metrics(train(config("a"), quiet=True))
    seconds = time.perf_counter() - start
    final = metrics[-1]
    first, second = final["eval/return_stage_0"], final["eval/return_stage_1"]
    print(f"RL² on Navigation2D: {seconds:.0f} s, {final['env_steps']} env steps, "
          f"episode returns {first:.1f} -> {second:.1f}")
    assert second >= -15.0
    assert second > first + 2.0
    # Same seed, same numbers: a replay of the first iterations matches to the last digit.
    replay = read_metrics(train(config("b", "num_iterations=10"), quiet=True))
    assert strip(replay) == strip(metrics[:10])
