"""Gradient-based adaptation of a model to many tasks at once, as pure functions.

Parameters are a plain dict with a leading task dimension (``[B, ...]``); the model runs for all
tasks through ``torch.vmap`` over ``torch.func.functional_call`` (no module copies, no
monkey-patching).  MAML, Reptile and the fine-tuned baseline share these steps; they differ in
what they do with the adapted parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from metarl.supervised.batch import FewShotBatch, per_task_loss

Params = dict[str, torch.Tensor]


def per_task(model: nn.Module, num_tasks: int) -> Params:
    """The model's parameters repeated for ``num_tasks`` tasks (views; gradients flow back)."""
    return {name: p.unsqueeze(0).expand(num_tasks, *p.shape) for name, p in model.named_parameters()}


def detached(params: Params) -> Params:
    """Fresh leaves holding the same values (cuts the graph, e.g. for evaluation)."""
    return {name: value.detach().requires_grad_() for name, value in params.items()}


def predict(model: nn.Module, params: Params, inputs: torch.Tensor) -> torch.Tensor:
    """``inputs [B, M, ...]`` with per-task ``params [B, ...]`` -> outputs ``[B, M, ...]``."""
    return vmap(lambda p, x: functional_call(model, p, (x,)))(params, inputs)


def inner_step(model: nn.Module, params: Params, inputs: torch.Tensor, targets: torch.Tensor, *,
               lr: float, classification: bool, create_graph: bool) -> Params:
    """One gradient step per task on its own examples: ``φ_i ← φ_i − α ∇ L_i(φ_i)`` (MAML eq. 1).

    Each task's loss depends only on its own slice of ``params``, so the gradient of the sum is
    the stack of per-task gradients.
    """
    losses = per_task_loss(predict(model, params, inputs), targets, classification=classification)
    grads = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=create_graph)
    return {name: value - lr * grad for (name, value), grad in zip(params.items(), grads)}


def adapt(model: nn.Module, params: Params, inputs: torch.Tensor, targets: torch.Tensor, *,
          lr: float, num_steps: int, classification: bool, create_graph: bool) -> Params:
    """``num_steps`` inner steps; with ``create_graph`` the result is differentiable w.r.t. the
    starting parameters through every step (second-order MAML)."""
    for _ in range(num_steps):
        params = inner_step(model, params, inputs, targets, lr=lr, classification=classification,
                            create_graph=create_graph)
        if not create_graph:
            params = detached(params)
    return params


def staged_query_predictions(model: nn.Module, batch: FewShotBatch, *, lr: float, num_stages: int):
    """Query predictions ``[B, Q, ...]`` after 0, 1, ..., ``num_stages`` inner steps on the
    support sets, starting from the model's parameters (which are not changed)."""
    params = detached(per_task(model, batch.num_tasks))
    for stage in range(num_stages + 1):
        with torch.no_grad():
            yield predict(model, params, batch.query_inputs)
        if stage < num_stages:
            params = detached(inner_step(model, params, batch.support_inputs, batch.support_targets, lr=lr,
                                         classification=batch.is_classification, create_graph=False))
