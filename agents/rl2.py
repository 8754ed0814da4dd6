"""RL² (Duan et al., 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning").

The agent adapts through its memory, not through gradients.  A GRU reads, at every step, the
observation together with the previous action, the previous reward and the previous done flag
(Duan et al., sec. 2.2, Fig. 1), and its hidden state runs across all episodes of a *trial*: K
successive episodes on one task.  The hidden state is reset only when a trial starts, never at
an episode boundary inside a trial, so what the agent learned about the task in episode k is
still there in episode k + 1.

Training maximises the discounted return of whole trials (the paper's objective: "the total
discounted reward accumulated during a single trial") with PPO (Schulman et al., 2017):

* a trial of K episodes is K successive ``sampler.sample(tasks, actor, episodes_per_task=E)``
  calls on the same tasks, with one :class:`TrialActor` carrying one hidden state per sub-env
  across them; the K ``Trajectories`` are then concatenated along time, per column, into one
  trial sequence (:func:`concatenate_episodes`);
* GAE (Schulman et al., 2016) runs over the whole trial: through the episode ends inside it
  (their next value is the value of the next episode's first step, since the memory carries on),
  stopped at the trial's end, where the value bootstraps from ``V(s')`` when the last episode was
  truncated by the time limit and not when it terminated (:func:`trial_advantages`);
* minibatches are sets of whole trials; backpropagation through time may be truncated every
  ``truncation_length`` steps (the forward pass still carries the hidden state through).  With
  ``minibatch="chunks"`` the trials are cut into ``truncation_length``-step chunks instead, each
  starting from the hidden state the collecting parameters had reached there, and minibatches
  are sets of chunks from all trials (as recurrent PPO implementations commonly do, e.g.
  Meta-World+'s RL²): an update then runs the GRU over ``truncation_length`` steps rather than
  whole trials, so long trials afford many more updates for the same computation.

Actions are a Gaussian in units where the env's action box is [-1, 1]; the env clips them.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from metarl.agent import AgentSpec, TrainingBudget, acts_with_mean
from metarl.networks import MLP
from metarl.registry import register_agent
from metarl.returns import generalized_advantages, masked_mean, normalize_advantages
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, Task, TaskFamily
from metarl.trajectories import Trajectories


@dataclass(frozen=True)
class RL2Config:
    """Hyperparameters; defaults are tuned for 2D navigation with trials of 2 episodes."""

    meta_batch_size: int = 20
    """Tasks per iteration."""
    trials_per_task: int = 5
    """Parallel trials per task per iteration (sub-envs = ``meta_batch_size * trials_per_task``)."""
    episodes_per_trial: int = 2
    """Episodes K in one trial; the hidden state runs through all of them."""
    hidden_size: int = 64
    """GRU hidden units (one GRU, shared by the policy and value heads)."""
    head_sizes: tuple[int, ...] = (64,)
    """Hidden layers of the MLP heads on top of the GRU state."""
    activation: str = "tanh"
    """Activation of the heads: ``tanh`` or ``relu``."""
    init_std: float = 0.5
    """Initial action standard deviation, in units where the action box is [-1, 1]."""
    min_std: float = 1e-3
    """Floor of the action standard deviation."""
    discount: float = 0.99
    """γ over the whole trial (rewards of episode k+1 are discounted back into episode k)."""
    gae_lambda: float = 0.95
    """λ of GAE."""
    reward_scale: float = 0.1
    """Multiplies rewards in the advantages and value targets (not in the policy's input), so
    that values are of order one."""
    clip_ratio: float = 0.2
    """PPO's ε: the probability ratio is clipped to [1 - ε, 1 + ε] (PPO eq. 7)."""
    value_loss_coef: float = 0.5
    """Weight of the value loss."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""
    learning_rate: float = 3e-3
    """Adam step size."""
    num_epochs: int = 10
    """Passes over the batch of trials per iteration."""
    num_minibatches: int = 4
    """Minibatches per epoch; each holds whole trials."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    truncation_length: int = 0
    """Truncated backpropagation through time: cut gradients every this many steps of a trial
    (0: backpropagate through the whole trial)."""
    minibatch: str = "trials"
    """What a minibatch is made of: ``trials`` (whole trials) or ``chunks`` (``truncation_length``
    steps of a trial, starting from the hidden state the rollout's parameters had there; needs
    ``truncation_length`` > 0; ``num_minibatches`` then splits all chunks of the iteration)."""
    normalize_advantages: bool = True
    """Normalise advantages to zero mean and unit variance over the batch."""
    normalize_observations: bool = False
    """Standardise observations with running statistics of all observations seen in training
    (updated after each iteration's update, so a rollout and its update use the same ones)."""


@dataclass(frozen=True)
class _Batch:
    """Trials ready for the PPO update, all ``[T, B, ...]`` except ``inputs [T + 1, B, I]``."""

    inputs: torch.Tensor
    actions: torch.Tensor
    """Actions in normalised units (the Gaussian's sample), ``[T, B, A]``."""
    old_log_probs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor
    states: torch.Tensor | None = None
    """``minibatch="chunks"``: the hidden state at the start of every chunk, ``[C, B, H]``."""


# --------------------------------------------------------------------------------- pure maths
def concatenate_episodes(episodes: Sequence[Trajectories]) -> Trajectories:
    """Join the K episodes of each column into one trial sequence, padding only at the end.

    ``episodes[k]`` is the batch of episode k, ``[T_k, B, ...]`` with a prefix mask per column.
    Column ``b`` of the result holds the valid steps of episodes 0..K-1 of column ``b`` back to
    back, ``[T, B, ...]`` with ``T = max_b sum_k len_k[b]``; ``terminated``/``truncated`` mark the
    episode ends inside the trial, ``mask`` the valid steps.
    """
    if not episodes:
        raise MetaRLError("a trial needs at least one episode")
    B = episodes[0].num_episodes
    if any(e.num_episodes != B for e in episodes):
        raise MetaRLError("every episode batch of a trial must have the same number of columns")
    lengths = torch.stack([e.mask.sum(0).long() for e in episodes])  # [K, B]
    offsets = torch.cumsum(lengths, 0) - lengths
    T = int(lengths.sum(0).max().item())
    fields = ("observations", "actions", "rewards", "next_observations", "terminated", "truncated",
              "mask")
    first = episodes[0]
    out = {name: getattr(first, name).new_zeros((T, *getattr(first, name).shape[1:])) for name in fields}
    info_names = set(episodes[0].infos).intersection(*(e.infos for e in episodes[1:]))
    infos = {name: episodes[0].infos[name].new_zeros((T, B)) for name in info_names}
    for k, episode in enumerate(episodes):
        steps = torch.arange(episode.num_steps, device=lengths.device).unsqueeze(1)
        valid = episode.mask > 0
        rows = (offsets[k].unsqueeze(0) + steps).expand(-1, B)[valid]
        columns = torch.arange(B, device=lengths.device).expand(episode.num_steps, -1)[valid]
        for name in fields:
            out[name][rows, columns] = getattr(episode, name)[valid]
        for name in info_names:
            infos[name][rows, columns] = episode.infos[name][valid]
    return Trajectories(**out, infos=infos)


def trial_ends(mask: torch.Tensor) -> torch.Tensor:
    """``[T, B]`` bool: the last valid step of each column (mask is a prefix per column)."""
    valid = mask > 0
    following = torch.cat([valid[1:], torch.zeros_like(valid[:1])])
    return valid & ~following


def trial_inputs(trial: Trajectories, normalized_actions: torch.Tensor) -> torch.Tensor:
    """The recurrent network's inputs over a trial, ``[T + 1, B, O + A + 2]``.

    Step ``t`` reads ``(o_t, a_{t-1}, r_{t-1}, d_{t-1})`` with zeros at ``t = 0`` (RL² Fig. 1);
    ``d`` is 1 after an episode end inside the trial.  Position ``len_b`` (one past the last
    step of column ``b``) holds ``(s'_last, a_last, r_last, 0)``: the state the agent would have
    seen had the last episode gone on, whose value bootstraps a truncated trial end.
    ``normalized_actions [T, B, A]`` are the actions the env applied, in [-1, 1] units.
    """
    T, B = trial.mask.shape
    lengths = trial.mask.sum(0).long()
    columns = torch.arange(B, device=lengths.device)
    observations = torch.cat([trial.observations, torch.zeros_like(trial.observations[:1])])
    observations[lengths, columns] = trial.next_observations[lengths - 1, columns]
    zero = torch.zeros_like(trial.rewards[:1])
    previous_actions = torch.cat([torch.zeros_like(normalized_actions[:1]), normalized_actions])
    previous_rewards = torch.cat([zero, trial.rewards])
    previous_dones = torch.cat([zero, trial.dones.to(trial.rewards.dtype)])
    previous_dones[lengths, columns] = 0.0
    return torch.cat([observations, previous_actions, previous_rewards.unsqueeze(-1),
                      previous_dones.unsqueeze(-1)], dim=-1)


def trial_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    mask: torch.Tensor,
    *,
    discount: float,
    gae_lambda: float,
) -> torch.Tensor:
    """GAE over whole trials: ``rewards``, ``terminated``, ``mask`` ``[T, B]``; ``values
    [T + 1, B]`` with ``values[len_b, b]`` the bootstrap value after the last step of trial b.

    Inside a trial the next value of step t is ``values[t + 1]``, also across an episode end:
    the trial is one episode of the meta-level (BAMDP) process and the memory carries on, so an
    inner episode end neither stops the recursion nor the bootstrap.  The recursion stops at the
    trial's end, which bootstraps from ``values[len_b]`` unless the env terminated there.
    Returns advantages ``[T, B]`` (0 on padding).
    """
    ends = trial_ends(mask)
    return generalized_advantages(
        rewards, values[:-1], values[1:], terminated & ends, ends, mask,
        discount=discount, gae_lambda=gae_lambda,
    )


def clipped_surrogate_loss(ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                           clip_ratio: float) -> torch.Tensor:
    """PPO's clipped objective, negated (Schulman et al., 2017, eq. 7): the masked mean over
    ``[T, B]`` of ``-min(ρ A, clip(ρ, 1 - ε, 1 + ε) A)`` with ``ρ = π_new / π_old``."""
    clipped = ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio)
    return -masked_mean(torch.min(ratio * advantages, clipped * advantages), mask)


def normalize_actions(actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Map env-unit actions ``[..., A]`` into [-1, 1] units and clip as the env does."""
    return ((actions - (high + low) / 2) / ((high - low) / 2)).clamp(-1.0, 1.0)


# --------------------------------------------------------------------------------- networks
class RunningNormalizer(nn.Module):
    """Running mean and variance of ``[N, D]`` samples (Chan et al.'s parallel update), as buffers
    so that checkpoints and CPU copies carry them.  Identity until :meth:`update` is called."""

    def __init__(self, dim: int, *, clip: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("variance", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.clip = clip

    def update(self, samples: torch.Tensor) -> None:
        samples = samples.to(self.mean)
        n = samples.shape[0]
        if n == 0:
            return
        batch_mean = samples.mean(0)
        batch_variance = samples.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        if self.count == 0:
            self.variance.copy_(batch_variance)
        else:
            self.variance.copy_((self.variance * self.count + batch_variance * n
                                 + delta**2 * self.count * n / total) / total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.variance + 1e-8).sqrt().to(x.dtype)
        return ((x - self.mean.to(x.dtype)) / scale).clamp(-self.clip, self.clip)


class RecurrentActorCritic(nn.Module):
    """A GRU over ``(o_t, a_{t-1}, r_{t-1}, d_{t-1})`` with two MLP heads on its state: the mean
    of a diagonal Gaussian policy (in [-1, 1] action units, state-independent learned std) and
    the value.  The memory is shared: what the GRU infers about the task serves both heads.
    """

    def __init__(self, input_dim: int, action_dim: int, *, config: RL2Config,
                 generator: torch.Generator):
        super().__init__()
        H = config.hidden_size
        # Built on the meta device so that no draw touches the global RNG; then PyTorch's
        # U(-1/sqrt(H), 1/sqrt(H)) scheme, drawn from our generator instead.
        self.gru = nn.GRU(input_dim, H, device="meta").to_empty(device="cpu")
        with torch.no_grad():
            for parameter in self.gru.parameters():
                uniform = torch.rand(parameter.shape, generator=generator) * 2 - 1
                parameter.copy_(uniform / math.sqrt(H))
        self.mean_head = MLP(H, action_dim, config.head_sizes, activation=config.activation,
                             generator=generator)
        self.value_head = MLP(H, 1, config.head_sizes, activation=config.activation,
                              generator=generator)
        with torch.no_grad():  # a near-zero initial mean action, as cleanrl's PPO
            self.mean_head.layers[-1].weight.mul_(0.01)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(config.init_std)))
        self.min_log_std = math.log(config.min_std)
        self.hidden_size = H
        self.observation_dim = input_dim - action_dim - 2
        self.observation_normalizer = RunningNormalizer(self.observation_dim)

    def _normalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Standardise the observation part of ``inputs [..., O + A + 2]``."""
        O = self.observation_dim
        return torch.cat([self.observation_normalizer(inputs[..., :O]), inputs[..., O:]], -1)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """The state at the start of a trial: zeros ``[B, H]``."""
        return torch.zeros(batch_size, self.hidden_size, device=self.log_std.device)

    def features(self, inputs: torch.Tensor, *, truncation_length: int = 0) -> torch.Tensor:
        """GRU states ``[T, B, H]`` over ``inputs [T, B, I]`` from the start of a trial; gradients
        are cut every ``truncation_length`` steps (truncated BPTT) while the forward pass
        carries the state through."""
        state = self.initial_state(inputs.shape[1]).unsqueeze(0)
        inputs = self._normalize(inputs)
        if truncation_length <= 0:
            return self.gru(inputs, state)[0]
        chunks = []
        for start in range(0, inputs.shape[0], truncation_length):
            chunk, state = self.gru(inputs[start:start + truncation_length], state)
            chunks.append(chunk)
            state = state.detach()
        return torch.cat(chunks)

    def features_from(self, inputs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """GRU states ``[T, B, H]`` over ``inputs [T, B, I]`` from ``state [B, H]`` (a chunk
        of a trial, from the hidden state at its start)."""
        return self.gru(self._normalize(inputs), state.unsqueeze(0))[0]

    def distribution(self, features: torch.Tensor) -> torch.distributions.Normal:
        """``features [..., H]`` → Normal with batch shape ``[..., A]``."""
        mean = self.mean_head(features)
        std = self.log_std.clamp_min(self.min_log_std).exp()
        return torch.distributions.Normal(mean, std.expand_as(mean))

    def value(self, features: torch.Tensor) -> torch.Tensor:
        """``features [..., H]`` → values ``[...]``."""
        return self.value_head(features).squeeze(-1)

    def step(self, inputs: torch.Tensor,
             state: torch.Tensor) -> tuple[torch.distributions.Normal, torch.Tensor]:
        """One step for a batch: ``inputs [B, I]``, ``state [B, H]`` → (π(·|h'), ``h' [B, H]``)."""
        state = self.gru(self._normalize(inputs).unsqueeze(0), state.unsqueeze(0))[0][0]
        return self.distribution(state), state


# --------------------------------------------------------------------------------- rollouts
class TrialActor:
    """Acts in ``B`` sub-envs through one trial: one hidden state per sub-env, carried across
    the episodes of the trial and reset only by creating a new actor (a new trial).

    Call :meth:`start_episode` before each ``sampler.sample`` of the trial.  Sub-envs whose
    episode has ended are still stepped by the collector; their state is frozen until the next
    episode, so the memory sees exactly the steps that are recorded.
    """

    def __init__(self, network: RecurrentActorCritic, *, num_envs: int, action_low: np.ndarray,
                 action_high: np.ndarray, generator: torch.Generator):
        self.network = network
        self.generator = generator
        device = network.log_std.device
        self.device = device
        self.low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        action_dim = self.low.shape[0]
        self.hidden = network.initial_state(num_envs)
        self.previous_actions = torch.zeros(num_envs, action_dim, device=device)
        self.previous_rewards = torch.zeros(num_envs, device=device)
        self.previous_dones = torch.zeros(num_envs, device=device)
        self.active = torch.ones(num_envs, dtype=torch.bool, device=device)
        self.mean = False

    def start_episode(self, *, mean: bool = False) -> None:
        """A new episode of the same trial begins in every sub-env (the memory is kept);
        ``mean``: it acts with the policy's mean action, drawing no noise."""
        self.active.fill_(True)
        self.mean = mean

    def inputs(self, observations: torch.Tensor) -> torch.Tensor:
        """``[B, O + A + 2]``: ``(o_t, a_{t-1}, r_{t-1}, d_{t-1})``, as :func:`trial_inputs`."""
        return torch.cat([observations.to(self.device), self.previous_actions,
                          self.previous_rewards.unsqueeze(-1), self.previous_dones.unsqueeze(-1)], -1)

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        """``observations [B, O]`` → actions ``[B, A]`` in env units (CPU)."""
        distribution, hidden = self.network.step(self.inputs(observations), self.hidden)
        self.hidden = torch.where(self.active.unsqueeze(-1), hidden, self.hidden)
        if self.mean:
            normalized = distribution.mean
        else:
            noise = torch.randn(distribution.mean.shape, generator=self.generator).to(self.device)
            normalized = distribution.mean + distribution.stddev * noise
        return ((self.high + self.low) / 2 + normalized * (self.high - self.low) / 2).cpu()

    def observe_step(self, actions: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
                     truncated: torch.Tensor) -> None:
        """Remember what the next step's input needs, for the sub-envs that really stepped."""
        active = self.active
        actions = normalize_actions(actions.to(self.device), self.low, self.high)
        self.previous_actions = torch.where(active.unsqueeze(-1), actions, self.previous_actions)
        self.previous_rewards = torch.where(active, rewards.to(self.device), self.previous_rewards)
        dones = (terminated | truncated).to(self.device)
        self.previous_dones = torch.where(active, dones.float(), self.previous_dones)
        self.active = active & ~dones


# --------------------------------------------------------------------------------- agent
class RL2:
    """The RL² agent: meta-training by PPO over trials, adaptation by memory alone.

    ``train_iteration`` runs one trial of ``episodes_per_trial`` episodes in ``trials_per_task``
    sub-envs per task and updates on it; ``adapt`` runs one trial per sub-env on held-out tasks
    and yields its episodes one by one (the evaluator's stages are the trial's episodes).
    """

    adaptation_unit = "episode"

    def __init__(self, config: RL2Config, *, observation_dim: int, action_dim: int,
                 device: torch.device, generator: torch.Generator):
        _check_config(config)
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.generator = generator
        input_dim = observation_dim + action_dim + 2
        self.network = RecurrentActorCritic(input_dim, action_dim, config=config,
                                            generator=generator).to(device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate)

    def _acting_network(self) -> RecurrentActorCritic:
        """Rollouts step on the CPU: a CPU copy when updates run on an accelerator."""
        if self.device.type == "cpu":
            return self.network
        return copy.deepcopy(self.network).to("cpu")

    def run_trial(self, tasks: Sequence[Task], sampler: Sampler, *, num_episodes: int,
                  trials_per_task: int, generator: torch.Generator,
                  mean_actions_from: int | None = None) -> Iterator[Trajectories]:
        """One trial of ``num_episodes`` episodes in ``len(tasks) * trials_per_task`` sub-envs
        (task-major); yields each episode's ``Trajectories`` as it is collected.  Episodes from
        ``mean_actions_from`` on act with the policy's mean (the memory runs on)."""
        env = sampler.env(len(tasks) * trials_per_task)
        actor = TrialActor(self._acting_network(), num_envs=env.num_envs, action_low=env.action_low,
                           action_high=env.action_high, generator=generator)
        for episode in range(num_episodes):
            actor.start_episode(mean=acts_with_mean(episode, mean_actions_from))
            yield sampler.sample(tasks, actor, episodes_per_task=trials_per_task)

    def _batch(self, trial: Trajectories, low: torch.Tensor, high: torch.Tensor) -> _Batch:
        """Inputs, old log-probabilities, advantages and value targets of concatenated trials
        ``[T, B, ...]``, computed once with the parameters that collected them."""
        c = self.config
        trial = trial.to(self.device)
        normalized = normalize_actions(trial.actions, low, high)
        # The Gaussian's sample is recovered exactly from the env-unit action before clipping.
        unclipped = (trial.actions - (high + low) / 2) / ((high - low) / 2)
        inputs = trial_inputs(trial, normalized)
        with torch.no_grad():
            T = trial.num_steps
            features = self.network.features(inputs)
            old_log_probs = self.network.distribution(features[:T]).log_prob(unclipped).sum(-1)
            values = self.network.value(features)
            advantages = trial_advantages(
                trial.rewards * c.reward_scale, values, trial.terminated, trial.mask,
                discount=c.discount, gae_lambda=c.gae_lambda,
            )
            returns = (advantages + values[:T]) * trial.mask
            if c.normalize_advantages:
                advantages = normalize_advantages(advantages, trial.mask)
            states = None
            if c.minibatch == "chunks":  # the GRU's output is its state: h before step s = features[s - 1]
                L = c.truncation_length
                states = torch.cat([torch.zeros_like(features[:1]), features[L - 1:T - 1:L]])
        return _Batch(inputs, unclipped, old_log_probs, advantages, returns, trial.mask, states)

    def train_iteration(self, tasks: Sequence[Task], sampler: Sampler) -> dict[str, float]:
        c = self.config
        start = time.perf_counter()
        episodes = list(self.run_trial(tasks, sampler, num_episodes=c.episodes_per_trial,
                                       trials_per_task=c.trials_per_task, generator=self.generator))
        trial = concatenate_episodes(episodes)
        sample_seconds = time.perf_counter() - start

        start = time.perf_counter()
        env = sampler.env(len(tasks) * c.trials_per_task)
        low = torch.as_tensor(env.action_low, dtype=torch.float32, device=self.device)
        high = torch.as_tensor(env.action_high, dtype=torch.float32, device=self.device)
        batch = self._batch(trial, low, high)
        stats = self._ppo_update(batch)
        if c.normalize_observations:
            self.network.observation_normalizer.update(trial.observations[trial.mask > 0])
        stats["time/update_seconds"] = time.perf_counter() - start
        stats["time/sample_seconds"] = sample_seconds
        for k, episode in enumerate(episodes):
            stats[f"train/return_episode_{k}"] = episode.episode_returns().mean().item()
        stats["train/trial_return"] = trial.episode_returns().mean().item()
        stats["train/policy_std"] = self.network.log_std.exp().mean().item()
        return stats

    def _columns(self, batch: _Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The update's columns: per-step tensors ``[S, M, ...]`` (``inputs``, ``actions``,
        ``old_log_probs``, ``advantages``, ``returns``, ``mask``) and the hidden state each
        column starts from (``[M, H]``; None: zeros, at a trial's start).  Whole trials
        (``S = T``, ``M = B``), or their chunks of ``truncation_length`` steps (``M`` = the
        chunks that hold a step)."""
        T = batch.mask.shape[0]
        steps = {"inputs": batch.inputs[:T], "actions": batch.actions, "old_log_probs": batch.old_log_probs,
                 "advantages": batch.advantages, "returns": batch.returns, "mask": batch.mask}
        if batch.states is None:
            return steps, None
        L, C = self.config.truncation_length, batch.states.shape[0]

        def chunked(x: torch.Tensor) -> torch.Tensor:  # [T, B, ...] -> [L, C * B, ...], column c * B + b
            x = torch.cat([x, x.new_zeros(C * L - T, *x.shape[1:])])
            return x.view(C, L, *x.shape[1:]).transpose(0, 1).reshape(L, C * x.shape[1], *x.shape[2:])

        steps = {name: chunked(x) for name, x in steps.items()}
        valid = (steps["mask"].sum(0) > 0).nonzero().squeeze(-1)
        states = batch.states.reshape(-1, batch.states.shape[-1])
        return {name: x[:, valid] for name, x in steps.items()}, states[valid]

    def _ppo_update(self, batch: _Batch) -> dict[str, float]:
        """Several epochs of PPO-clip (PPO eq. 7) with a value loss and an entropy bonus, over
        minibatches of whole trials (or of chunks of them: :meth:`_columns`)."""
        c = self.config
        steps, states = self._columns(batch)
        M = steps["mask"].shape[1]
        if M < c.num_minibatches:
            raise MetaRLError(f"agent_options.num_minibatches={c.num_minibatches} exceeds the {M} "
                              f"{c.minibatch} of this iteration's trials; use at most that many")
        parameters = list(self.network.parameters())
        totals: dict[str, list[float]] = {}
        for _ in range(c.num_epochs):
            order = torch.randperm(M, generator=self.generator)
            for index in order.chunk(c.num_minibatches):
                index = index.to(self.device)
                inputs = steps["inputs"][:, index]
                mask = steps["mask"][:, index]
                advantages = steps["advantages"][:, index]
                if states is None:
                    features = self.network.features(inputs, truncation_length=c.truncation_length)
                else:
                    features = self.network.features_from(inputs, states[index])
                distribution = self.network.distribution(features)
                log_probs = distribution.log_prob(steps["actions"][:, index]).sum(-1)
                log_ratio = log_probs - steps["old_log_probs"][:, index]
                ratio = log_ratio.exp()
                policy_loss = clipped_surrogate_loss(ratio, advantages, mask, clip_ratio=c.clip_ratio)
                values = self.network.value(features)
                value_loss = 0.5 * masked_mean((values - steps["returns"][:, index]) ** 2, mask)
                entropy = masked_mean(distribution.entropy().sum(-1), mask)
                loss = policy_loss + c.value_loss_coef * value_loss - c.entropy_coef * entropy
                self.optimizer.zero_grad()
                loss.backward()
                if c.max_grad_norm > 0:
                    gradient_norm = nn.utils.clip_grad_norm_(parameters, c.max_grad_norm)
                else:
                    gradient_norm = torch.sqrt(sum((p.grad**2).sum() for p in parameters))
                self.optimizer.step()
                with torch.no_grad():
                    # k3 estimator of KL(old || new) (Schulman, "Approximating KL divergence").
                    approx_kl = masked_mean(ratio - 1.0 - log_ratio, mask)
                    clip_fraction = masked_mean(((ratio - 1.0).abs() > c.clip_ratio).float(), mask)
                for name, value in (("loss/policy", policy_loss), ("loss/value", value_loss),
                                    ("loss/entropy", entropy), ("loss/approx_kl", approx_kl),
                                    ("loss/clip_fraction", clip_fraction),
                                    ("loss/gradient_norm", gradient_norm)):
                    totals.setdefault(name, []).append(float(value.detach()))
        return {name: sum(values) / len(values) for name, values in totals.items()}

    def adapt(self, tasks: Sequence[Task], sampler: Sampler, *, num_stages: int,
              episodes_per_stage: int, generator: torch.Generator,
              mean_actions_from: int | None = None) -> Iterator[Trajectories]:
        """Per task, ``episodes_per_stage`` parallel trials of ``num_stages + 1`` episodes; yields
        the episodes k = 0..num_stages of the trials in turn (the parameters never change)."""
        yield from self.run_trial(tasks, sampler, num_episodes=num_stages + 1,
                                  trials_per_task=episodes_per_stage, generator=generator,
                                  mean_actions_from=mean_actions_from)

    def state_dict(self) -> dict[str, Any]:
        return {"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


MINIBATCHES = ("trials", "chunks")
"""Values of ``RL2Config.minibatch``."""


def _check_config(config: RL2Config) -> None:
    positive = ("meta_batch_size", "trials_per_task", "episodes_per_trial", "hidden_size",
                "num_epochs", "num_minibatches")
    for name in positive:
        if getattr(config, name) < 1:
            raise MetaRLError(f"agent_options.{name} must be at least 1; got {getattr(config, name)}")
    if config.activation not in ("tanh", "relu"):
        raise MetaRLError(f"agent_options.activation {config.activation!r}; accepted: tanh, relu")
    if config.minibatch == "trials" and config.num_minibatches > config.meta_batch_size * config.trials_per_task:
        raise MetaRLError(
            f"agent_options.num_minibatches={config.num_minibatches} exceeds the "
            f"{config.meta_batch_size * config.trials_per_task} trials per iteration "
            "(meta_batch_size * trials_per_task); use at most that many"
        )
    if config.truncation_length < 0:
        raise MetaRLError(f"agent_options.truncation_length must be >= 0 (0: full trials); "
                          f"got {config.truncation_length}")
    if config.minibatch not in MINIBATCHES:
        raise MetaRLError(f"agent_options.minibatch {config.minibatch!r}; accepted: {', '.join(MINIBATCHES)}")
    if config.minibatch == "chunks" and config.truncation_length == 0:
        raise MetaRLError("agent_options.minibatch=chunks cuts trials into agent_options.truncation_length "
                          "steps; set truncation_length > 0 (or minibatch=trials)")
    if config.init_std <= 0 or config.min_std <= 0:
        raise MetaRLError("agent_options.init_std and agent_options.min_std must be positive")


def budget(config: RL2Config, family: TaskFamily, num_iterations: int) -> TrainingBudget:
    """Per iteration: ``trials_per_task`` trials of ``episodes_per_trial`` episodes on each of
    ``meta_batch_size`` tasks; ``num_epochs * num_minibatches`` PPO steps."""
    episodes = config.meta_batch_size * config.trials_per_task * config.episodes_per_trial
    return TrainingBudget(num_iterations * episodes * family.max_episode_steps,
                          num_iterations * config.num_epochs * config.num_minibatches)


def build(config: RL2Config, *, observation_dim: int, action_dim: int, device: torch.device,
          generator: torch.Generator, **_: Any) -> RL2:
    return RL2(config, observation_dim=observation_dim, action_dim=action_dim, device=device,
               generator=generator)


SPEC = register_agent(AgentSpec(
    name="rl2",
    description="RL²: GRU policy whose memory spans a multi-episode trial, trained with PPO",
    config_class=RL2Config,
    build=build,
    step_size_keys=("learning_rate",),
    budget=budget,
))
