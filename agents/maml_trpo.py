"""MAML-TRPO (Finn, Abbeel & Levine, 2017): model-agnostic meta-learning for RL.

Inner loop: ``num_inner_steps`` vanilla policy-gradient steps per task, computed for all tasks
of the meta-batch at once by running the policy through ``torch.func.functional_call`` with
per-task parameters ``[N, ...]``.  Outer loop: TRPO on the post-adaptation surrogate, with the
meta-gradient taken through the inner updates (second order, ``create_graph=True``) unless
``first_order``.  The Fisher-vector product is the Hessian of the mean KL between the
post-adaptation policies before and after the outer step, also through the adaptation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch.func import functional_call

from metarl.agent import AgentSpec, TrainingBudget, acts_with_mean
from metarl.networks import GaussianMLPPolicy, LinearFeatureBaseline
from metarl.registry import register_agent
from metarl.returns import discounted_returns, generalized_advantages, normalize_advantages
from metarl.rollout import Sampler
from metarl.tasks import Task, TaskFamily
from metarl.trajectories import Trajectories
from metarl.tasks import MetaRLError
from metarl.trpo import flatten, line_search_stats, trust_region_step, unflatten_like

Params = dict[str, torch.Tensor]


FISHER_PRODUCTS = ("exact", "exact_autograd", "post_adaptation")


@dataclass(frozen=True)
class MAMLTRPOConfig:
    """Hyperparameters; defaults are the reference's 2D-navigation set-up with a tanh 64-64
    policy (see ``hidden_sizes``; the MuJoCo configs in ``configs/`` set the paper's locomotion
    values, network included)."""

    meta_batch_size: int = 20
    """Tasks per meta-iteration."""
    episodes_per_task: int = 20
    """Episodes per task for each inner step and for the post-adaptation batch ("fast batch")."""
    num_inner_steps: int = 1
    """Policy-gradient steps in the inner loop."""
    inner_lr: float = 0.5
    """Step size of the inner policy-gradient update in meta-training (the reference's 0.5 for
    2D navigation, taken in the policy's ``[-1, 1]`` action space)."""
    eval_inner_lrs: tuple[float, ...] = (0.5, 0.25)
    """Step size of each meta-test gradient step, first to last; the last one repeats for
    further steps; empty: ``inner_lr`` for every step.  The default is the reference's
    2D-navigation test (``cbfinn/maml_rl`` ``test_maml_point.py``): 0.5, then 0.25."""
    first_order: bool = False
    """Drop the second-order terms of the meta-gradient (no ``create_graph``)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths.  The reference runs ReLU 100-100 (``configs/maml_trpo_navigation.yaml``
    keeps it); under its set-up otherwise, tanh 64-64 adapted further on 2D navigation's held-out
    goals (issue 15's ablation, ``benchmarks/RESULTS.md``: k=2 -3.85 / k=3 -3.82 against the
    reference network's -6.13 / -5.82, the paper's -3.3 / -3.2), so it is the default."""
    activation: str = "tanh"
    """Hidden-layer nonlinearity, ``tanh`` or ``relu`` (see ``hidden_sizes``)."""
    init_std: float = 1.0
    """Initial policy standard deviation, in the policy's ``[-1, 1]`` action space (the
    reference's 1.0: 0.1 in the units of 2D navigation, whose box is ``[-0.1, 0.1]^2``)."""
    discount: float = 0.99
    gae_lambda: float = 1.0
    max_kl: float = 0.01
    """Trust-region radius: mean KL between post-adaptation policies before and after a step."""
    fisher: str = "exact"
    """Fisher-vector product of the outer TRPO step.  ``exact``: the Hessian of the mean KL of
    the post-adaptation policies w.r.t. the meta-parameters, through the inner updates,
    computed in factored form ``J^T M J`` (J: Jacobian of the adaptation, M: Fisher of the
    adapted policy) with one-level graphs; ``exact_autograd``: the same Hessian by double
    backward through the whole adaptation (slower; the reference); ``post_adaptation``: M alone,
    treating the inner update as a constant shift (cheapest, poorer steps).  The line search
    checks the exact post-adaptation KL in every case, so the trust region always holds."""
    cg_iterations: int = 10
    cg_damping: float = 1e-5
    line_search_backtrack_ratio: float = 0.8
    line_search_max_steps: int = 15
    baseline_reg_coeff: float = 1e-5


@dataclass(frozen=True)
class _Batch:
    """One inner (or outer) batch laid out per task: tensors ``[T, N, E, ...]``."""

    observations: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor


class _TaskActor:
    """Acts for ``N`` tasks × ``E`` sub-envs with per-task parameters ``[N, ...]``; ``mean``:
    the policy's mean action, no noise drawn."""

    def __init__(self, policy: GaussianMLPPolicy, params: Params, num_tasks: int,
                 generator: torch.Generator, device: torch.device, *, mean: bool = False):
        self.policy, self.params, self.num_tasks = policy, params, num_tasks
        self.generator, self.device, self.mean = generator, device, mean

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        B = observations.shape[0]
        obs = observations.to(self.device).view(self.num_tasks, B // self.num_tasks, -1)
        distribution = functional_call(self.policy, self.params, (obs,))
        if self.mean:
            return distribution.mean.reshape(B, -1).cpu()
        noise = torch.randn(distribution.mean.shape, generator=self.generator)
        actions = distribution.mean + distribution.stddev * noise.to(self.device)
        return actions.reshape(B, -1).cpu()


class MAMLTRPO:
    adaptation_unit = "gradient step"

    def __init__(self, config: MAMLTRPOConfig, *, observation_dim: int, action_dim: int,
                 device: torch.device, generator: torch.Generator):
        if any(lr <= 0 for lr in config.eval_inner_lrs):
            raise MetaRLError(
                f"agent_options.eval_inner_lrs: {list(config.eval_inner_lrs)}; accepted: positive "
                "step sizes, or [] for inner_lr at every meta-test step"
            )
        if config.fisher not in FISHER_PRODUCTS:
            raise MetaRLError(
                f"agent_options.fisher: {config.fisher!r}; accepted: {', '.join(FISHER_PRODUCTS)}"
            )
        self.config = config
        self.meta_batch_size = config.meta_batch_size
        self.device = device
        self.generator = generator
        self.policy = GaussianMLPPolicy(
            observation_dim, action_dim, hidden_sizes=config.hidden_sizes,
            activation=config.activation, init_std=config.init_std, generator=generator,
        ).to(device)
        self.baseline = LinearFeatureBaseline(reg_coeff=config.baseline_reg_coeff)

    # ----------------------------------------------------------------------------- inner loop
    def _batch(self, trajectories: Trajectories, num_tasks: int) -> _Batch:
        """Per-task advantages: discounted returns minus a per-task linear baseline, normalised."""
        c = self.config
        data = trajectories.to(self.device).by_task(num_tasks)
        returns = discounted_returns(data.rewards, data.mask, discount=c.discount)
        values, next_values = self.baseline.fit_predict(
            data.observations, data.next_observations, returns, data.mask
        )
        advantages = generalized_advantages(
            data.rewards, values, next_values, data.terminated, data.dones, data.mask,
            discount=c.discount, gae_lambda=c.gae_lambda,
        )
        advantages = normalize_advantages(advantages, data.mask, dim=(0, 2))
        return _Batch(data.observations, data.actions, advantages, data.mask)

    def _log_probs(self, params: Params, batch: _Batch) -> tuple[torch.Tensor, torch.distributions.Normal]:
        """Log-probabilities ``[T, N, E]`` of the batch's actions under per-task ``params``."""
        T, N, E, O = batch.observations.shape
        obs = batch.observations.permute(1, 0, 2, 3).reshape(N, T * E, O)
        actions = batch.actions.permute(1, 0, 2, 3).reshape(N, T * E, -1)
        distribution = functional_call(self.policy, params, (obs,))
        log_probs = distribution.log_prob(actions).sum(-1).view(N, T, E).permute(1, 0, 2)
        return log_probs, distribution

    def _inner_step(self, params: Params, batch: _Batch, *, create_graph: bool,
                    lr: float | None = None) -> Params:
        """One policy-gradient step per task: ``θ_i' = θ_i - α ∇ L_i(θ_i)`` (MAML eq. 1);
        ``α`` is ``lr``, or the training step size ``inner_lr``."""
        log_probs, _ = self._log_probs(params, batch)
        per_task = -(log_probs * batch.advantages * batch.mask).sum((0, 2)) / batch.mask.sum((0, 2))
        # Each task's loss depends only on its own slice, so the gradient of the sum w.r.t. the
        # [N, ...] parameters is the stack of per-task gradients.
        grads = torch.autograd.grad(per_task.sum(), list(params.values()), create_graph=create_graph)
        lr = self.config.inner_lr if lr is None else lr
        return {name: value - lr * grad
                for (name, value), grad in zip(params.items(), grads)}

    def _per_task(self, num_tasks: int) -> Params:
        return {name: p.unsqueeze(0).expand(num_tasks, *p.shape)
                for name, p in self.policy.named_parameters()}

    def _adapt(self, batches: Sequence[_Batch], num_tasks: int, *, create_graph: bool) -> Params:
        params = self._per_task(num_tasks)
        for batch in batches:
            params = self._inner_step(params, batch, create_graph=create_graph)
        return params

    @staticmethod
    def _detach(params: Params) -> Params:
        return {name: value.detach().requires_grad_() for name, value in params.items()}

    # ----------------------------------------------------------------------------- outer loop
    @staticmethod
    def _mean_kl(distribution: torch.distributions.Normal, old: torch.distributions.Normal,
                 outer: _Batch) -> torch.Tensor:
        """Mean over tasks of the masked mean per-step KL(old || new); distributions ``[N, T*E, A]``."""
        T, N, E = outer.mask.shape
        kl_steps = torch.distributions.kl_divergence(old, distribution).sum(-1)  # [N, T*E]
        kl_mask = outer.mask.permute(1, 0, 2).reshape(N, T * E)
        return ((kl_steps * kl_mask).sum(1) / kl_mask.sum(1)).mean()

    def _meta_objective(self, inner: Sequence[_Batch], outer: _Batch, old_log_probs: torch.Tensor,
                        old: torch.distributions.Normal, *, create_graph: bool):
        """Surrogate loss and mean KL after adaptation, as functions of the meta-parameters."""
        N = outer.observations.shape[1]
        adapted = self._adapt(inner, N, create_graph=create_graph)
        log_probs, distribution = self._log_probs(adapted, outer)
        ratio = torch.exp(log_probs - old_log_probs)
        loss = (-(ratio * outer.advantages * outer.mask).sum((0, 2)) / outer.mask.sum((0, 2))).mean()
        return loss, self._mean_kl(distribution, old, outer)

    def _factored_fisher_product(self, inner: Sequence[_Batch], outer: _Batch,
                                 old: torch.distributions.Normal, *, through_adaptation: bool):
        """``v ↦ J^T M J v`` (flat vectors over the meta-parameters).

        At the current parameters the KL and its gradient vanish, so the Hessian of the KL
        through the adaptation ``θ' = θ - α ∇L(θ)`` is exactly ``J^T M J`` with
        ``J = Π_k (I - α H_k)`` (H_k: per-task Hessian of the k-th inner loss) and M the Hessian
        of the KL w.r.t. the adapted parameters.  Each factor is a Hessian-vector product on a
        one-level graph, far cheaper than differentiating a third-order graph.
        """
        N = outer.observations.shape[1]
        lr = self.config.inner_lr
        steps: list[tuple[Params, tuple[torch.Tensor, ...]]] = []
        params = self._detach(self._per_task(N))
        for batch in inner:
            log_probs, _ = self._log_probs(params, batch)
            per_task = -(log_probs * batch.advantages * batch.mask).sum((0, 2)) / batch.mask.sum((0, 2))
            grads = torch.autograd.grad(per_task.sum(), list(params.values()), create_graph=through_adaptation)
            steps.append((params, grads))
            params = self._detach({n: v - lr * g for (n, v), g in zip(params.items(), grads)})
        _, distribution = self._log_probs(params, outer)
        kl = self._mean_kl(distribution, old, outer)
        kl_grads = torch.autograd.grad(kl, list(params.values()), create_graph=True)
        shared = list(self.policy.parameters())

        def hessian_product(leaf: Params, grads, vectors):
            dot = sum((g * v).sum() for g, v in zip(grads, vectors))
            return torch.autograd.grad(dot, list(leaf.values()), retain_graph=True)

        def product(flat: torch.Tensor) -> torch.Tensor:
            vectors = [v.unsqueeze(0).expand(N, *v.shape) for v in unflatten_like(flat, shared)]
            if through_adaptation:
                for leaf, grads in steps:  # J v
                    vectors = [v - lr * h for v, h in zip(vectors, hessian_product(leaf, grads, vectors))]
            vectors = list(hessian_product(params, kl_grads, vectors))  # M J v
            if through_adaptation:
                for leaf, grads in reversed(steps):  # J^T M J v
                    vectors = [v - lr * h for v, h in zip(vectors, hessian_product(leaf, grads, vectors))]
            return flatten([v.sum(0) for v in vectors])  # the meta-parameters are shared by all tasks

        return product

    def train_iteration(self, tasks: Sequence[Task], sampler: Sampler) -> dict[str, float]:
        c = self.config
        N = len(tasks)
        start = time.perf_counter()
        params = self._detach(self._per_task(N))
        inner_batches: list[_Batch] = []
        stage_returns = []
        for _ in range(c.num_inner_steps):
            trajectories = sampler.sample(
                tasks, _TaskActor(self.policy, params, N, self.generator, self.device),
                episodes_per_task=c.episodes_per_task,
            )
            stage_returns.append(trajectories.episode_returns().mean().item())
            batch = self._batch(trajectories, N)
            inner_batches.append(batch)
            params = self._detach(self._inner_step(params, batch, create_graph=False))
        trajectories = sampler.sample(
            tasks, _TaskActor(self.policy, params, N, self.generator, self.device),
            episodes_per_task=c.episodes_per_task,
        )
        stage_returns.append(trajectories.episode_returns().mean().item())
        outer = self._batch(trajectories, N)
        sample_seconds = time.perf_counter() - start

        start = time.perf_counter()
        with torch.no_grad():
            old_log_probs, old = self._log_probs(params, outer)
            old = torch.distributions.Normal(old.mean.detach(), old.stddev.detach())
        stats = self._trpo_step(inner_batches, outer, old_log_probs, old)
        update_seconds = time.perf_counter() - start
        stats.update({
            "train/return_before_adaptation": stage_returns[0],
            "train/return_after_adaptation": stage_returns[-1],
            "time/sample_seconds": sample_seconds,
            "time/update_seconds": update_seconds,
        })
        return stats

    def _trpo_step(self, inner: Sequence[_Batch], outer: _Batch, old_log_probs: torch.Tensor,
                   old: torch.distributions.Normal) -> dict[str, float]:
        c = self.config
        create_graph = not c.first_order
        parameters = list(self.policy.parameters())
        loss, kl = self._meta_objective(inner, outer, old_log_probs, old, create_graph=create_graph)
        gradient = flatten(torch.autograd.grad(loss, parameters, retain_graph=True))
        if c.fisher == "exact_autograd" and create_graph:
            kl_gradient = flatten(torch.autograd.grad(kl, parameters, create_graph=True))

            def fisher_product(vector: torch.Tensor) -> torch.Tensor:
                return flatten(torch.autograd.grad(kl_gradient @ vector, parameters, retain_graph=True))
        else:
            # First-order MAML treats the adaptation as a shift, so its Fisher is M alone.
            fisher_product = self._factored_fisher_product(
                inner, outer, old, through_adaptation=c.fisher != "post_adaptation" and create_graph
            )

        def evaluate() -> tuple[float, float]:
            new_loss, new_kl = self._meta_objective(inner, outer, old_log_probs, old, create_graph=False)
            return new_loss.item(), new_kl.item()

        result = trust_region_step(
            parameters, gradient, fisher_product, evaluate, loss_before=loss.item(), max_kl=c.max_kl,
            cg_iterations=c.cg_iterations, cg_damping=c.cg_damping,
            backtrack_ratio=c.line_search_backtrack_ratio, max_backtracks=c.line_search_max_steps,
        )
        return {**line_search_stats(result, gradient),
                "train/policy_std": self.policy.log_std.exp().mean().item()}

    # ----------------------------------------------------------------------------- evaluation
    def adapt(self, tasks: Sequence[Task], sampler: Sampler, *, num_stages: int,
              episodes_per_stage: int, generator: torch.Generator,
              mean_actions_from: int | None = None) -> Iterator[Trajectories]:
        N = len(tasks)
        params = self._detach(self._per_task(N))
        for stage in range(num_stages + 1):
            trajectories = sampler.sample(
                tasks, _TaskActor(self.policy, params, N, generator, self.device,
                                  mean=acts_with_mean(stage, mean_actions_from)),
                episodes_per_task=episodes_per_stage,
            )
            yield trajectories
            if stage < num_stages:
                params = self._detach(self._inner_step(
                    params, self._batch(trajectories, N), create_graph=False, lr=self.eval_lr(stage)
                ))

    def eval_lr(self, step: int) -> float:
        """Step size of meta-test gradient step ``step`` (0-based)."""
        lrs = self.config.eval_inner_lrs
        if not lrs:
            return self.config.inner_lr
        return lrs[min(step, len(lrs) - 1)]

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.generator.set_state(state["generator"])


def budget(config: MAMLTRPOConfig, family: TaskFamily, num_iterations: int) -> TrainingBudget:
    """Per iteration: ``episodes_per_task`` episodes on each of ``meta_batch_size`` tasks for
    every inner step and for the post-adaptation batch; one outer TRPO step."""
    episodes = config.meta_batch_size * config.episodes_per_task * (config.num_inner_steps + 1)
    return TrainingBudget(num_iterations * episodes * family.max_episode_steps, num_iterations)


def build(config: MAMLTRPOConfig, *, family: TaskFamily, observation_dim: int, action_dim: int,
          device: torch.device, generator: torch.Generator) -> MAMLTRPO:
    """MAML needs nothing of the family beyond the observation and action sizes."""
    del family
    return MAMLTRPO(config, observation_dim=observation_dim, action_dim=action_dim,
                    device=device, generator=generator)


SPEC = register_agent(AgentSpec(
    name="maml_trpo",
    description="MAML with a TRPO outer step (second order, multi-step inner loop)",
    config_class=MAMLTRPOConfig,
    build=build,
    step_size_keys=("inner_lr", "max_kl"),
    budget=budget,
))
