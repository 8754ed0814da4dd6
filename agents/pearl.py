"""PEARL (Rakelly, Zhou, Quillen, Finn & Levine, 2019): off-policy meta-RL with probabilistic
context variables.

A latent task variable ``z`` is inferred from a *context* of transitions ``c = (s, a, r, s')``
by a permutation-invariant encoder: every transition gives a Gaussian factor
``Ψ(z | c_n) = N(μ_n, σ²_n)`` and the posterior is their normalised product
``q(z | c) ∝ Π_n Ψ(z | c_n)`` (paper sec. 4.2).  A KL term to the unit Gaussian prior,
weighted by ``kl_lambda``, is the information bottleneck (paper eq. 3, β = ``kl_lambda``).
The actor and critic are SAC (twin Q networks with polyak-averaged targets, a tanh Gaussian
policy, optional automatic entropy tuning) on the augmented state ``(s, z)``.  The encoder is
trained through the critic's Bellman error (paper sec. 4.3: "we train the encoder using
gradients from the Bellman update for the critic"); the policy loss uses a detached ``z``.
Unlike the authors' code (oyster, whose default context was ``(s, a, r)``), the context here
always holds ``s'`` as in the paper's definition.

How the paper's schedule (Algorithm 1, oyster's ``collect_data``) meets ``train_iteration``:
the training loop hands ``meta_batch_size`` tasks drawn from the family's *fixed* training
split.  Replay buffers are kept per task, keyed by the task's JSON identity, in preallocated
tensors ``[num_train_tasks, capacity, ...]``.

1. A task met for the first time gets ``num_initial_steps`` transitions with ``z`` from the
   prior, into both its RL and its encoder buffer (oyster does this for every training task
   before iteration 0; here it happens when the loop first draws the task).
2. Data collection on the first ``num_tasks_sample`` distinct tasks of the iteration: the
   task's encoder buffer is emptied (so the encoder sees recent data only), then
   ``num_steps_prior`` transitions with ``z ~ N(0, I)`` (RL + encoder buffers),
   ``num_steps_posterior`` with ``z ~ q(z | c)``, ``c`` sampled from the task's encoder buffer
   and re-inferred after every trajectory (RL + encoder buffers), and
   ``num_extra_rl_steps_posterior`` with ``z`` from the posterior (RL buffer only: the policy
   learns to act on inferred ``z`` without the encoder training on that data).  Steps are
   collected as whole trajectories: ``ceil(steps / horizon)`` per task.
3. ``num_train_steps_per_itr`` gradient steps; each draws a meta-batch of ``meta_batch_size``
   tasks (with replacement, as oyster) among the tasks with data, and updates all of them in
   one batched forward ``[num_tasks, batch, ...]`` on ``device``.

Rollouts act on the CPU (a CPU copy of the policy and encoder when ``device`` is a GPU).
At meta-test (:meth:`PEARL.adapt`) stage ``k`` is trajectory ``k`` on the held-out task; the
first ``num_exploration_trajectories`` use ``z`` from the prior, each later one a ``z`` sampled
from the posterior given every transition gathered so far on that task (oyster's
``collect_paths`` with ``accum_context=True``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metarl.agent import AgentSpec, TrainingBudget, acts_with_mean
from metarl.networks import MLP
from metarl.registry import register_agent
from metarl.rollout import Sampler
from metarl.tasks import MetaRLError, Task, TaskFamily
from metarl.trajectories import Trajectories

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""Clamp of the policy's log standard deviation (SAC, Haarnoja et al. 2018, and oyster)."""
MIN_FACTOR_VARIANCE = 1e-7
"""Lower bound of each factor's variance so that precisions stay finite (oyster clamps so)."""


@dataclass(frozen=True)
class PEARLConfig:
    """Hyperparameters; defaults are oyster's ``configs/default.py`` (PEARL's published runs)."""

    meta_batch_size: int = 16
    """Tasks per gradient step, and tasks the training loop draws per iteration."""
    num_tasks_sample: int = 5
    """Tasks (the first distinct ones of the iteration's draw) on which data is collected."""
    num_initial_steps: int = 2000
    """Transitions collected with ``z`` from the prior on a task the first time it is drawn."""
    num_steps_prior: int = 400
    """Transitions per collected task and iteration with ``z ~ N(0, I)``."""
    num_steps_posterior: int = 0
    """Transitions per collected task with ``z`` from the posterior, added to the encoder buffer."""
    num_extra_rl_steps_posterior: int = 400
    """Transitions per collected task with ``z`` from the posterior, for the RL buffer only."""
    num_train_steps_per_itr: int = 2000
    """Gradient steps per iteration."""
    batch_size: int = 256
    """Transitions per task in the RL batch of a gradient step."""
    embedding_batch_size: int = 64
    """Context size: transitions per task fed to the encoder in a gradient step and when
    inferring ``z`` for data collection."""
    latent_dim: int = 5
    """Size of ``z``; 0 turns PEARL into plain multi-task SAC (used for the task-revealing
    oracle, whose observations already carry the task)."""
    hidden_sizes: tuple[int, ...] = (300, 300, 300)
    """Hidden layers of the policy and of each Q network."""
    encoder_hidden_sizes: tuple[int, ...] = (200, 200, 200)
    """Hidden layers of the context encoder."""
    discount: float = 0.99
    soft_target_tau: float = 0.005
    """Polyak rate of the target Q networks: ``θ' ← (1 - τ) θ' + τ θ``."""
    policy_lr: float = 3e-4
    qf_lr: float = 3e-4
    context_lr: float = 3e-4
    alpha_lr: float = 3e-4
    """Learning rate of ``log α`` under ``auto_entropy``."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the Bellman target; with α = 1 it sets the weight of
    the entropy bonus (oyster's convention)."""
    kl_lambda: float = 0.1
    """Weight β of ``Σ_tasks KL(q(z | c) ‖ N(0, I))`` in the encoder's loss (paper eq. 3)."""
    entropy_coefficient: float = 1.0
    """Fixed temperature α when ``auto_entropy`` is off (oyster: 1, with ``reward_scale``)."""
    auto_entropy: bool = False
    """Tune α to keep the policy's entropy near ``target_entropy`` (Haarnoja et al., 2018b)."""
    target_entropy: float | None = None
    """Entropy target under ``auto_entropy``; None: ``-action_dim``."""
    policy_mean_reg_weight: float = 1e-3
    """Weight of the squared pre-tanh mean in the policy loss (oyster)."""
    policy_std_reg_weight: float = 1e-3
    """Weight of the squared log standard deviation in the policy loss (oyster)."""
    buffer_capacity: int = 100_000
    """Transitions kept per task (first in, first out).  oyster allots 10^6, never reached at
    the paper's budgets (about 3·10^4 per task on HalfCheetahVel)."""
    num_exploration_trajectories: int = 1
    """At meta-test, trajectories that use ``z`` from the prior before the posterior is used
    (oyster's ``num_exp_traj_eval``)."""
    eval_deterministic: bool = True
    """At meta-test, act with the policy's mean ``tanh(μ)`` (oyster evaluates so)."""
    critic_reward_key: str = ""
    """Train the critic on ``infos[critic_reward_key]`` instead of the reward (PEARL's sparse
    point robot meta-trains the critic on ``reward_dense``; the context keeps the env reward)."""


def budget(config: PEARLConfig, family: TaskFamily, num_iterations: int) -> TrainingBudget:
    """Per iteration, on each of ``num_tasks_sample`` tasks: whole trajectories covering
    ``num_steps_prior``, ``num_steps_posterior`` and ``num_extra_rl_steps_posterior``; once per
    training task first drawn, ``num_initial_steps`` (bounded by the tasks the run can draw);
    ``num_train_steps_per_itr`` gradient steps."""
    def whole(steps: int) -> int:  # collection runs whole episodes
        return math.ceil(steps / family.max_episode_steps) * family.max_episode_steps

    per_task = (whole(config.num_steps_prior) + whole(config.num_steps_posterior)
                + whole(config.num_extra_rl_steps_posterior))
    tasks_drawn = num_iterations * config.meta_batch_size
    if family.num_train_tasks is not None:
        tasks_drawn = min(tasks_drawn, family.num_train_tasks)
    return TrainingBudget(
        num_iterations * config.num_tasks_sample * per_task + tasks_drawn * whole(config.num_initial_steps),
        num_iterations * config.num_train_steps_per_itr)


# --------------------------------------------------------------------------------- pure maths
def product_of_gaussians(
    means: torch.Tensor, variances: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised product of Gaussian factors ``Π_n N(μ_n, σ²_n)`` (PEARL sec. 4.2).

    ``means``, ``variances`` ``[..., C, L]`` (``C`` factors), ``mask`` ``[..., C]`` (1 keeps a
    factor, 0 drops it) → ``(mean, variance)`` ``[..., L]`` with
    ``1/σ² = Σ_n 1/σ²_n`` and ``μ = σ² Σ_n μ_n / σ²_n``.
    """
    precisions = 1.0 / variances
    if mask is not None:
        precisions = precisions * mask.unsqueeze(-1)
    variance = 1.0 / precisions.sum(-2)
    mean = variance * (precisions * means).sum(-2)
    return mean, variance


def kl_to_standard_normal(mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I))`` ``[...]`` for ``mean``, ``variance`` ``[..., L]``:
    ``½ Σ_l (σ²_l + μ²_l − 1 − log σ²_l)``."""
    return 0.5 * (variance + mean.square() - 1.0 - variance.log()).sum(-1)


def tanh_gaussian_log_prob(
    pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """Log-density ``[...]`` of ``a = tanh(u)``, ``u ~ N(mean, exp(log_std)²)``, all ``[..., A]``.

    Change of variables (SAC, Haarnoja et al. 2018, appendix C):
    ``log π(a) = log N(u) − Σ log(1 − tanh²u)``, with
    ``log(1 − tanh²u) = 2 (log 2 − u − softplus(−2u))`` for numerical stability.
    """
    gaussian = (
        -0.5 * ((pre_tanh - mean) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    correction = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh)).sum(-1)
    return gaussian - correction


def context_features(
    observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
    next_observations: torch.Tensor,
) -> torch.Tensor:
    """One context vector per transition: ``[..., 2O + A + 1] = (s, a, r, s')``."""
    return torch.cat([observations, actions, rewards.unsqueeze(-1), next_observations], dim=-1)


# --------------------------------------------------------------------------------- networks
class TanhGaussianPolicy(nn.Module):
    """``π(a | s, z)``: an MLP gives the mean and log std of ``u``; the action is ``tanh(u)``
    in ``[-1, 1]^A`` (rescaled to the env's box by the actor)."""

    def __init__(self, input_dim: int, action_dim: int, hidden_sizes: Sequence[int], *,
                 generator: torch.Generator):
        super().__init__()
        self.net = MLP(input_dim, 2 * action_dim, hidden_sizes, activation="relu", generator=generator)
        self.action_dim = action_dim

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs [..., O + L]`` → ``(mean, log_std)``, each ``[..., A]``."""
        mean, log_std = self.net(inputs).split(self.action_dim, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, inputs: torch.Tensor, noise: torch.Tensor):
        """Reparameterised ``(actions, log_probs, mean, log_std)`` with ``noise ~ N(0, I) [..., A]``."""
        mean, log_std = self(inputs)
        pre_tanh = mean + log_std.exp() * noise
        return torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std), mean, log_std


class TwinQNetwork(nn.Module):
    """Two Q networks ``Q_1, Q_2 (s, a, z)`` whose layers are stacked ``W [2, out, in]``, so
    both run in one batched matmul per layer (one kernel per layer on a GPU, not two)."""

    def __init__(self, input_dim: int, hidden_sizes: Sequence[int], *, generator: torch.Generator):
        super().__init__()
        sizes = [input_dim, *hidden_sizes, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            limit = math.sqrt(6.0 / (fan_in + fan_out))  # Xavier uniform, as metarl.networks.MLP
            self.weights.append(nn.Parameter(
                (torch.rand(2, fan_in, fan_out, generator=generator) * 2 - 1) * limit))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, fan_out)))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs [M, D]`` → ``[2, M]``: row ``i`` is ``Q_i``."""
        x = inputs.unsqueeze(0)
        last = len(self.weights) - 1
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x.expand(2, *x.shape[1:]), weight) if k == 0 else \
                torch.baddbmm(bias, x, weight)
            if k < last:
                x = torch.relu(x)
        return x.squeeze(-1)


# --------------------------------------------------------------------------------- replay
class TaskReplayBuffers:
    """First-in-first-out replay buffers, one per task slot, in preallocated tensors
    ``fields[name]: [num_tasks, capacity, dim]`` on one device.

    ``add`` writes a task's transitions at its ring position; ``sample`` draws, for a tensor of
    task slots ``[N]``, ``num`` transitions per slot uniformly with replacement, returning
    ``[N, num, dim]`` per field.  Slots past a task's size are never read.
    """

    def __init__(self, field_dims: dict[str, int], *, num_tasks: int, capacity: int,
                 device: torch.device):
        self.field_dims = dict(field_dims)
        self.capacity = capacity
        self.device = device
        self.data = {name: torch.empty(num_tasks, capacity, dim, device=device)
                     for name, dim in field_dims.items()}
        self.sizes = [0] * num_tasks
        self.positions = [0] * num_tasks
        self._device_sizes = torch.zeros(num_tasks, dtype=torch.long, device=device)

    def add(self, slot: int, transitions: dict[str, torch.Tensor]) -> None:
        """Append ``transitions[name]: [M, dim]`` to task ``slot`` (oldest ones overwritten)."""
        count = next(iter(transitions.values())).shape[0]
        if count == 0:
            return
        if count > self.capacity:  # only the newest ``capacity`` survive anyway
            transitions = {k: v[-self.capacity:] for k, v in transitions.items()}
            count = self.capacity
        index = (self.positions[slot] + torch.arange(count, device=self.device)) % self.capacity
        for name in self.field_dims:
            self.data[name][slot, index] = transitions[name].to(self.device, torch.float32)
        self.positions[slot] = (self.positions[slot] + count) % self.capacity
        self.sizes[slot] = min(self.sizes[slot] + count, self.capacity)
        self._device_sizes[slot] = self.sizes[slot]

    def clear(self, slot: int) -> None:
        self.sizes[slot] = 0
        self.positions[slot] = 0
        self._device_sizes[slot] = 0

    def sample(self, slots: torch.Tensor, num: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``num`` transitions per slot of ``slots [N]`` (every slot must hold data)."""
        sizes = self._device_sizes[slots].unsqueeze(1).to(torch.float32)
        uniform = torch.rand(slots.shape[0], num, generator=generator, device=self.device)
        index = (uniform * sizes).long()
        rows = slots.unsqueeze(1)
        return {name: value[rows, index] for name, value in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        # Only the filled part of each task's buffer is saved.
        return {
            "sizes": list(self.sizes), "positions": list(self.positions),
            "data": {name: [value[slot, :size].clone() for slot, size in enumerate(self.sizes)]
                     for name, value in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sizes = list(state["sizes"])
        self.positions = list(state["positions"])
        for name, per_task in state["data"].items():
            for slot, values in enumerate(per_task):
                self.data[name][slot, : values.shape[0]] = values.to(self.device)
        self._device_sizes.copy_(torch.tensor(self.sizes, dtype=torch.long))


# --------------------------------------------------------------------------------- acting
class _LatentActor:
    """Acts in ``B`` sub-envs with ``π(a | s, z_b)`` on the CPU; ``latents [B, L]``.

    Returns actions rescaled from ``[-1, 1]`` to the env's box ``[low, high]``.
    """

    def __init__(self, policy: TanhGaussianPolicy, latents: torch.Tensor, *, low: torch.Tensor,
                 high: torch.Tensor, generator: torch.Generator, deterministic: bool):
        self.policy, self.latents = policy, latents
        self.low, self.high = low, high
        self.generator, self.deterministic = generator, deterministic

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        mean, log_std = self.policy(torch.cat([observations, self.latents], dim=-1))
        if self.deterministic:
            unit = torch.tanh(mean)
        else:
            noise = torch.randn(mean.shape, generator=self.generator)
            unit = torch.tanh(mean + log_std.exp() * noise)
        return self.low + (unit + 1.0) * 0.5 * (self.high - self.low)


def _task_key(task: Task) -> str:
    return json.dumps(task, sort_keys=True)


def _num_train_tasks(family: TaskFamily) -> int:
    if family.num_train_tasks is not None:
        return family.num_train_tasks
    if family.fixed_tasks is not None:
        return len(family.fixed_tasks)
    raise MetaRLError(
        f"PEARL needs a fixed set of training tasks, but env family {family.name!r} resamples its "
        "training tasks every iteration; accepted: a family with num_train_tasks or fixed_tasks "
        "(e.g. PointRobot-Dense, HalfCheetahVel-PEARL, HalfCheetahDir, AntGoal)"
    )


# --------------------------------------------------------------------------------- agent
class PEARL:
    adaptation_unit = "trajectory"

    def __init__(self, config: PEARLConfig, *, observation_dim: int, action_dim: int,
                 num_train_tasks: int, device: torch.device, generator: torch.Generator):
        c = config
        if not 1 <= c.num_tasks_sample <= c.meta_batch_size:
            raise MetaRLError(
                f"agent_options.num_tasks_sample is {c.num_tasks_sample}; accepted: 1 to "
                f"meta_batch_size ({c.meta_batch_size}), since collection uses the iteration's tasks"
            )
        if c.latent_dim < 0 or c.batch_size < 1 or c.embedding_batch_size < 1 or c.buffer_capacity < 1:
            raise MetaRLError(
                "agent_options latent_dim must be >= 0 and batch_size, embedding_batch_size, "
                "buffer_capacity >= 1"
            )
        self.config = config
        self.meta_batch_size = c.meta_batch_size
        self.device = device
        self.generator = generator
        self.update_generator = torch.Generator(device=device).manual_seed(
            int(torch.randint(2**62, (1,), generator=generator)))
        """Draws replay indices and update noise on ``device`` (no host round trip on a GPU)."""
        O, A, L = observation_dim, action_dim, c.latent_dim
        self.observation_dim, self.action_dim = O, A
        context_dim = 2 * O + A + 1
        self.encoder = MLP(context_dim, 2 * L, c.encoder_hidden_sizes, activation="relu",
                           generator=generator).to(device)
        self.policy = TanhGaussianPolicy(O + L, A, c.hidden_sizes, generator=generator).to(device)
        self.critic = TwinQNetwork(O + A + L, c.hidden_sizes, generator=generator).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        self.target_entropy = -float(A) if c.target_entropy is None else c.target_entropy
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=c.policy_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=c.qf_lr, fused=True)
        self.encoder_optimizer = torch.optim.Adam(self.encoder.parameters(), lr=c.context_lr, fused=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=c.alpha_lr, fused=True)
        # Rollouts act on the CPU: on a GPU, per-step forwards of a small batch cost a launch
        # and a synchronisation each, so acting uses CPU copies refreshed before collection.
        on_cpu = device.type == "cpu"
        self._acting_policy = self.policy if on_cpu else copy.deepcopy(self.policy).cpu()
        self._acting_encoder = self.encoder if on_cpu else copy.deepcopy(self.encoder).cpu()
        self.replay = TaskReplayBuffers(
            {"observations": O, "actions": A, "rewards": 1, "next_observations": O, "terminals": 1},
            num_tasks=num_train_tasks, capacity=c.buffer_capacity, device=device)
        self.encoder_replay = TaskReplayBuffers(
            {"observations": O, "actions": A, "rewards": 1, "next_observations": O},
            num_tasks=num_train_tasks, capacity=c.buffer_capacity, device=device)
        self.num_train_tasks = num_train_tasks
        self.task_slots: dict[str, int] = {}

    # ----------------------------------------------------------------------------- inference
    def posterior(self, context: torch.Tensor, mask: torch.Tensor | None = None, *,
                  encoder: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | c)`` for ``context [..., C, 2O + A + 1]`` (``mask [..., C]``) → ``(mean,
        variance)`` ``[..., L]``: one Gaussian factor per transition, multiplied."""
        encoder = self.encoder if encoder is None else encoder
        L = self.config.latent_dim
        if L == 0:
            empty = context.new_zeros(*context.shape[:-2], 0)
            return empty, empty
        mean, raw_variance = encoder(context).split(L, dim=-1)
        variance = F.softplus(raw_variance).clamp_min(MIN_FACTOR_VARIANCE)
        return product_of_gaussians(mean, variance, mask)

    @property
    def alpha(self) -> torch.Tensor:
        if self.config.auto_entropy:
            return self.log_alpha.detach().exp()
        return torch.tensor(self.config.entropy_coefficient, device=self.device)

    # ----------------------------------------------------------------------------- data
    def _slot(self, task: Task) -> int:
        key = _task_key(task)
        if key not in self.task_slots:
            if len(self.task_slots) == self.num_train_tasks:
                raise MetaRLError(
                    f"PEARL got more than the family's {self.num_train_tasks} training tasks; "
                    "accepted: tasks from the fixed training split (TaskSampler.sample_train)")
            self.task_slots[key] = len(self.task_slots)
        return self.task_slots[key]

    @staticmethod
    def _bounds(sampler: Sampler) -> tuple[torch.Tensor, torch.Tensor]:
        env = sampler.describe()
        return (torch.as_tensor(env.action_low, dtype=torch.float32),
                torch.as_tensor(env.action_high, dtype=torch.float32))

    def _unit_actions(self, actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Map env actions back to the policy's ``[-1, 1]`` (buffers and contexts store these)."""
        return (actions - low) / (high - low) * 2.0 - 1.0

    def _store(self, trajectories: Trajectories, slots: Sequence[int], episodes_per_task: int,
               bounds: tuple[torch.Tensor, torch.Tensor], *, to_encoder: bool) -> None:
        """Add each task's valid transitions (mask 1) to its RL buffer (and encoder buffer)."""
        key = self.config.critic_reward_key
        if key and key not in trajectories.infos:
            raise MetaRLError(
                f"agent_options.critic_reward_key is {key!r} but the env reports no such info; "
                f"accepted: '' or one of {sorted(trajectories.infos)}")
        critic_rewards = trajectories.infos[key] if key else trajectories.rewards
        actions = self._unit_actions(trajectories.actions, *bounds)
        E = episodes_per_task
        for i, slot in enumerate(slots):
            columns = slice(i * E, (i + 1) * E)
            valid = trajectories.mask[:, columns] > 0

            def pick(x: torch.Tensor) -> torch.Tensor:
                values = x[:, columns][valid]
                return values.unsqueeze(-1) if values.dim() == 1 else values

            transitions = {
                "observations": pick(trajectories.observations), "actions": pick(actions),
                "next_observations": pick(trajectories.next_observations),
                "terminals": pick(trajectories.terminated.float()),
            }
            self.replay.add(slot, {**transitions, "rewards": pick(critic_rewards)})
            if to_encoder:
                self.encoder_replay.add(slot, {**transitions, "rewards": pick(trajectories.rewards)})

    def _context(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return context_features(batch["observations"], batch["actions"],
                                batch["rewards"].squeeze(-1), batch["next_observations"])

    def _collection_latents(self, slots: Sequence[int], *, posterior: bool) -> torch.Tensor:
        """``z [B, L]`` (CPU) for collection columns with task ``slots``: from the prior, or
        sampled from ``q(z | c)`` with ``c`` drawn from the task's encoder buffer (the prior
        where that buffer is still empty)."""
        B, L = len(slots), self.config.latent_dim
        mean, variance = torch.zeros(B, L), torch.ones(B, L)
        if posterior:
            has_context = [b for b, slot in enumerate(slots) if self.encoder_replay.sizes[slot] > 0]
            if has_context:
                rows = torch.tensor([slots[b] for b in has_context], device=self.device)
                with torch.no_grad():
                    batch = self.encoder_replay.sample(rows, self.config.embedding_batch_size,
                                                       self.update_generator)
                    m, v = self.posterior(self._context(batch))
                mean[has_context], variance[has_context] = m.cpu(), v.cpu()
        return mean + variance.sqrt() * torch.randn(B, L, generator=self.generator)

    def _collect(self, sampler: Sampler, tasks: Sequence[Task], slots: Sequence[int],
                 num_steps: int, bounds, *, posterior: bool, to_encoder: bool) -> list[float]:
        """Collect ``ceil(num_steps / horizon)`` trajectories per task; returns their returns.

        Trajectories whose data feeds the encoder buffer under the posterior are collected one
        round at a time, so each round's ``z`` is inferred from the data gathered before it
        (Algorithm 1); otherwise all trajectories of a task run side by side."""
        if num_steps <= 0 or not tasks:
            return []
        num_trajectories = math.ceil(num_steps / sampler.family.max_episode_steps)
        sequential = posterior and to_encoder
        rounds, per_round = (num_trajectories, 1) if sequential else (1, num_trajectories)
        returns: list[float] = []
        for _ in range(rounds):
            columns = [slot for slot in slots for _ in range(per_round)]
            actor = _LatentActor(self._acting_policy, self._collection_latents(columns, posterior=posterior),
                                 low=bounds[0], high=bounds[1], generator=self.generator,
                                 deterministic=False)
            trajectories = sampler.sample(tasks, actor, episodes_per_task=per_round)
            self._store(trajectories, slots, per_round, bounds, to_encoder=to_encoder)
            returns.extend(trajectories.episode_returns().tolist())
        return returns

    def _sync_acting(self) -> None:
        if self._acting_policy is not self.policy:
            self._acting_policy.load_state_dict(self.policy.state_dict())
            self._acting_encoder.load_state_dict(self.encoder.state_dict())

    # ----------------------------------------------------------------------------- training
    def train_iteration(self, tasks: Sequence[Task], sampler: Sampler) -> dict[str, float]:
        c = self.config
        start = time.perf_counter()
        self._sync_acting()
        bounds = self._bounds(sampler)
        known = set(self.task_slots)
        new_tasks, new_slots, distinct, distinct_slots = [], [], [], []
        for task in tasks:
            key, slot = _task_key(task), self._slot(task)
            if key not in known:
                known.add(key)
                new_tasks.append(task)
                new_slots.append(slot)
            if slot not in distinct_slots:
                distinct.append(task)
                distinct_slots.append(slot)
        prior_returns = self._collect(sampler, new_tasks, new_slots, c.num_initial_steps, bounds,
                                      posterior=False, to_encoder=True)
        collect, collect_slots = distinct[: c.num_tasks_sample], distinct_slots[: c.num_tasks_sample]
        for slot in collect_slots:
            self.encoder_replay.clear(slot)
        prior_returns += self._collect(sampler, collect, collect_slots, c.num_steps_prior, bounds,
                                       posterior=False, to_encoder=True)
        posterior_returns = self._collect(sampler, collect, collect_slots, c.num_steps_posterior,
                                          bounds, posterior=True, to_encoder=True)
        posterior_returns += self._collect(sampler, collect, collect_slots,
                                           c.num_extra_rl_steps_posterior, bounds,
                                           posterior=True, to_encoder=False)
        sample_seconds = time.perf_counter() - start

        start = time.perf_counter()
        # Meta-batches are drawn among the tasks with both RL and encoder data (with
        # num_steps_prior = 0 a task's just-cleared encoder buffer may still be empty).
        candidates = torch.tensor(
            [slot for slot in range(len(self.task_slots))
             if self.replay.sizes[slot] > 0 and self.encoder_replay.sizes[slot] > 0],
            dtype=torch.long, device=self.device)
        if c.num_train_steps_per_itr > 0 and candidates.numel() == 0:
            raise MetaRLError(
                "PEARL has no task with data to train on; accepted: num_initial_steps or "
                "num_steps_prior (or num_steps_posterior) > 0")
        totals: dict[str, torch.Tensor] = {}
        for _ in range(c.num_train_steps_per_itr):
            pick = torch.randint(candidates.numel(), (c.meta_batch_size,),
                                 generator=self.update_generator, device=self.device)
            slots = candidates[pick]
            for name, value in self.gradient_step(slots).items():
                totals[name] = totals.get(name, 0.0) + value
        update_seconds = time.perf_counter() - start
        steps = max(c.num_train_steps_per_itr, 1)
        stats = {name: (value / steps).item() for name, value in totals.items()}
        nan = float("nan")
        stats.update({
            "train/return_prior": sum(prior_returns) / len(prior_returns) if prior_returns else nan,
            "train/return_posterior": (sum(posterior_returns) / len(posterior_returns)
                                       if posterior_returns else nan),
            "train/num_tasks_seen": float(len(self.task_slots)),
            "time/gradient_steps_per_second": c.num_train_steps_per_itr / max(update_seconds, 1e-9),
            "time/sample_seconds": sample_seconds,
            "time/update_seconds": update_seconds,
        })
        return stats

    def gradient_step(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        """One SAC + encoder update on the tasks ``slots [N]`` (on ``device``), all at once.

        Returns detached scalar tensors (no host synchronisation) for the stats.
        """
        c = self.config
        g = self.update_generator
        N, B, L = slots.shape[0], c.batch_size, c.latent_dim
        context = self._context(self.encoder_replay.sample(slots, c.embedding_batch_size, g))
        batch = self.replay.sample(slots, B, g)
        mean, variance = self.posterior(context)                                # [N, L]
        z = mean + variance.sqrt() * torch.randn(N, L, generator=g, device=self.device)
        kl = kl_to_standard_normal(mean, variance).sum()                        # oyster sums tasks
        flat = lambda x: x.reshape(N * B, -1)
        z_rows = z.unsqueeze(1).expand(N, B, L).reshape(N * B, L)
        z_detached = z_rows.detach()
        observations, actions = flat(batch["observations"]), flat(batch["actions"])
        next_observations = flat(batch["next_observations"])
        rewards, terminals = batch["rewards"].reshape(-1), batch["terminals"].reshape(-1)
        alpha = self.alpha

        with torch.no_grad():  # Bellman target with the target twin's minimum (clipped double Q)
            noise = torch.randn(N * B, self.action_dim, generator=g, device=self.device)
            next_actions, next_log_probs, _, _ = self.policy.sample(
                torch.cat([next_observations, z_detached], -1), noise)
            next_q = self.target_critic(torch.cat([next_observations, next_actions, z_detached], -1))
            target = c.reward_scale * rewards + (1.0 - terminals) * c.discount * (
                next_q.min(0).values - alpha * next_log_probs)
        # z is NOT detached here: the critic's Bellman error trains the encoder (paper sec. 4.3).
        q = self.critic(torch.cat([observations, actions, z_rows], -1))
        critic_loss = (q - target).square().mean(1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.encoder_optimizer.zero_grad(set_to_none=True)
        (critic_loss + c.kl_lambda * kl).backward()
        self.critic_optimizer.step()
        self.encoder_optimizer.step()

        noise = torch.randn(N * B, self.action_dim, generator=g, device=self.device)
        policy_inputs = torch.cat([observations, z_detached], -1)
        new_actions, log_probs, policy_mean, policy_log_std = self.policy.sample(policy_inputs, noise)
        new_q = self.critic(torch.cat([observations, new_actions, z_detached], -1)).min(0).values
        policy_loss = ((alpha * log_probs - new_q).mean()
                       + c.policy_mean_reg_weight * policy_mean.square().mean()
                       + c.policy_std_reg_weight * policy_log_std.square().mean())
        parameters = list(self.policy.parameters())
        # Only the policy's gradient: the critic is a fixed function in this loss.
        for parameter, gradient in zip(parameters, torch.autograd.grad(policy_loss, parameters)):
            parameter.grad = gradient
        self.policy_optimizer.step()

        if c.auto_entropy:
            alpha_loss = -(self.log_alpha * (log_probs.detach() + self.target_entropy)).mean()
            self.alpha_optimizer.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optimizer.step()
        with torch.no_grad():
            for target_parameter, parameter in zip(self.target_critic.parameters(), self.critic.parameters()):
                target_parameter.lerp_(parameter, c.soft_target_tau)
        return {
            "loss/critic": critic_loss.detach(),
            "loss/policy": policy_loss.detach(),
            "loss/kl": kl.detach() / N,
            "train/q_mean": q.detach().mean(),
            "train/policy_entropy": -log_probs.detach().mean(),
            "train/alpha": alpha,
            "train/z_variance": variance.detach().mean() if L else torch.zeros((), device=self.device),
        }

    # ----------------------------------------------------------------------------- evaluation
    def adapt(self, tasks: Sequence[Task], sampler: Sampler, *, num_stages: int,
              episodes_per_stage: int, generator: torch.Generator,
              mean_actions_from: int | None = None) -> Iterator[Trajectories]:
        """Stage ``k`` = trajectory ``k`` on each task.  Each of the ``episodes_per_stage``
        columns of a task is an independent adaptation run with its own context; stages before
        ``num_exploration_trajectories`` draw ``z`` from the prior, later ones from
        ``q(z | all transitions of that column so far)``.  Everything runs on the CPU copies
        with ``generator``; the agent's own state is not touched.  A stage acts with the
        policy's mean (tanh of it) when ``eval_deterministic`` is set or from stage
        ``mean_actions_from`` on."""
        c = self.config
        self._sync_acting()
        bounds = self._bounds(sampler)
        B, L = len(tasks) * episodes_per_stage, c.latent_dim
        contexts: list[torch.Tensor] = []   # each [B, T, 2O + A + 1]
        masks: list[torch.Tensor] = []      # each [B, T]
        for stage in range(num_stages + 1):
            noise = torch.randn(B, L, generator=generator)
            if stage < c.num_exploration_trajectories:
                latents = noise
            else:
                with torch.no_grad():
                    mean, variance = self.posterior(torch.cat(contexts, 1), torch.cat(masks, 1),
                                                    encoder=self._acting_encoder)
                latents = mean + variance.sqrt() * noise
            deterministic = c.eval_deterministic or acts_with_mean(stage, mean_actions_from)
            actor = _LatentActor(self._acting_policy, latents, low=bounds[0], high=bounds[1],
                                 generator=generator, deterministic=deterministic)
            trajectories = sampler.sample(tasks, actor, episodes_per_task=episodes_per_stage)
            yield trajectories
            context = context_features(
                trajectories.observations, self._unit_actions(trajectories.actions, *bounds),
                trajectories.rewards, trajectories.next_observations)
            contexts.append(context.transpose(0, 1))
            masks.append(trajectories.mask.transpose(0, 1))

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "encoder": self.encoder.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "encoder_optimizer": self.encoder_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "update_generator": self.update_generator.get_state(),
            "replay": self.replay.state_dict(),
            "encoder_replay": self.encoder_replay.state_dict(),
            "task_slots": dict(self.task_slots),
        }

    def _restore_update_generator(self, saved: torch.Tensor) -> None:
        """Continue the update generator's stream, or, for a checkpoint written on another
        kind of device (a CUDA generator's 16-byte Philox state on a CPU, or the reverse), start
        a stream seeded from the saved state's bytes: loading the same checkpoint on the same
        kind of device gives the same draws, but not the draws the writing device would have
        made (evaluation draws nothing from it; resumed updates draw other replay indices)."""
        if saved.numel() == self.update_generator.get_state().numel():
            self.update_generator.set_state(saved)
            return
        digest = hashlib.sha256(saved.cpu().numpy().tobytes()).digest()
        self.update_generator.manual_seed(int.from_bytes(digest[:8], "little") >> 2)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.encoder.load_state_dict(state["encoder"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.generator.set_state(state["generator"])
        self._restore_update_generator(state["update_generator"])
        self.replay.load_state_dict(state["replay"])
        self.encoder_replay.load_state_dict(state["encoder_replay"])
        self.task_slots = dict(state["task_slots"])
        self._sync_acting()


def build(config: PEARLConfig, *, family: TaskFamily, observation_dim: int, action_dim: int,
          device: torch.device, generator: torch.Generator, **_: Any) -> PEARL:
    return PEARL(config, observation_dim=observation_dim, action_dim=action_dim,
                 num_train_tasks=_num_train_tasks(family), device=device, generator=generator)


SPEC = register_agent(AgentSpec(
    name="pearl",
    description="PEARL: SAC with a product-of-Gaussians context encoder over (s, a, r, s')",
    config_class=PEARLConfig,
    build=build,
    step_size_keys=("policy_lr", "qf_lr", "context_lr", "alpha_lr"),
    budget=budget,
))
