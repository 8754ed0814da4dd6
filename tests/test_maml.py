"""MAML-TRPO: the meta-gradient against finite differences, and the trust-region step."""

import copy

import pytest
import torch

from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig, _Batch
from metarl.tasks import MetaRLError


def tiny_agent(**overrides) -> MAMLTRPO:
    config = MAMLTRPOConfig(**{"hidden_sizes": (5,), "inner_lr": 0.1, "num_inner_steps": 2, "init_std": 1.0, **overrides})
    agent = MAMLTRPO(config, observation_dim=2, action_dim=2, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0))
    agent.policy.double()
    with torch.no_grad():  # a non-trivial point: random biases, non-unit std
        for p in agent.policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    return agent


def random_batch(seed: int, T=4, N=3, E=2) -> _Batch:
    g = torch.Generator().manual_seed(seed)
    return _Batch(
        observations=torch.randn(T, N, E, 2, generator=g, dtype=torch.float64),
        actions=torch.randn(T, N, E, 2, generator=g, dtype=torch.float64),
        advantages=torch.randn(T, N, E, generator=g, dtype=torch.float64),
        mask=torch.ones(T, N, E, dtype=torch.float64),
    )


def objective_pieces(agent):
    inner = [random_batch(1), random_batch(2)]
    outer = random_batch(3)
    adapted = {k: v.detach() for k, v in agent._adapt(inner, 3, create_graph=False).items()}
    old_log_probs, old = agent._log_probs(adapted, outer)
    old = torch.distributions.Normal(old.mean.detach(), old.stddev.detach())
    return inner, outer, old_log_probs.detach(), old


def finite_difference_gradient(agent, inner, outer, old_log_probs, old, eps=1e-6):
    params = list(agent.policy.parameters())
    grads = []
    for p in params:
        g = torch.zeros_like(p)
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            original = flat[i].item()
            flat[i] = original + eps
            plus = agent._meta_objective(inner, outer, old_log_probs, old, create_graph=False)[0].item()
            flat[i] = original - eps
            minus = agent._meta_objective(inner, outer, old_log_probs, old, create_graph=False)[0].item()
            flat[i] = original
            g.view(-1)[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return torch.cat([g.view(-1) for g in grads])


def test_second_order_meta_gradient_matches_finite_differences():
    agent = tiny_agent()
    pieces = objective_pieces(agent)
    loss, _ = agent._meta_objective(*pieces, create_graph=True)
    analytic = torch.cat([g.view(-1) for g in torch.autograd.grad(loss, list(agent.policy.parameters()))])
    numeric = finite_difference_gradient(agent, *pieces)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_first_order_meta_gradient_differs_from_the_true_gradient():
    agent = tiny_agent(first_order=True)
    pieces = objective_pieces(agent)
    loss, _ = agent._meta_objective(*pieces, create_graph=False)
    first_order = torch.cat([g.view(-1) for g in torch.autograd.grad(loss, list(agent.policy.parameters()))])
    numeric = finite_difference_gradient(agent, *pieces)
    relative = (first_order - numeric).norm() / numeric.norm()
    assert relative > 1e-2, relative


def test_factored_fisher_product_equals_the_hessian_of_the_kl_through_adaptation():
    agent = tiny_agent()
    inner, outer, old_log_probs, old = objective_pieces(agent)
    parameters = list(agent.policy.parameters())
    _, kl = agent._meta_objective(inner, outer, old_log_probs, old, create_graph=True)
    kl_gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl, parameters, create_graph=True)])
    factored = agent._factored_fisher_product(inner, outer, old, through_adaptation=True)
    shift_only = agent._factored_fisher_product(inner, outer, old, through_adaptation=False)
    for seed in range(3):
        v = torch.randn(kl_gradient.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        reference = torch.cat([g.reshape(-1) for g in torch.autograd.grad(kl_gradient @ v, parameters, retain_graph=True)])
        torch.testing.assert_close(factored(v), reference, rtol=1e-8, atol=1e-10)
        assert (shift_only(v) - reference).norm() > 1e-3 * reference.norm()


def test_unknown_fisher_option_is_named():
    from metarl.tasks import MetaRLError
    with pytest.raises(MetaRLError, match="accepted: exact, exact_autograd, post_adaptation"):
        tiny_agent(fisher="diagonal")


@pytest.mark.parametrize("fisher", ["exact", "exact_autograd", "post_adaptation"])
def test_trpo_step_respects_the_trust_region_and_improves(fisher):
    agent = tiny_agent(max_kl=0.01, fisher=fisher)
    inner, outer, old_log_probs, old = objective_pieces(agent)
    before = copy.deepcopy(agent.policy.state_dict())
    loss_before = agent._meta_objective(inner, outer, old_log_probs, old, create_graph=False)
    stats = agent._trpo_step(inner, outer, old_log_probs, old)
    loss_after, kl_after = agent._meta_objective(inner, outer, old_log_probs, old, create_graph=False)
    if stats["loss/line_search_accepted"]:
        assert kl_after.item() <= 0.01 + 1e-12
        assert loss_after.item() < loss_before[0].item()
        assert stats["loss/surrogate_after"] == pytest.approx(loss_after.item())
    else:
        for name, value in agent.policy.state_dict().items():
            torch.testing.assert_close(value, before[name])
    assert stats["loss/line_search_accepted"] == 1.0  # this problem is well conditioned


def test_rejected_step_leaves_parameters_unchanged():
    """With zero outer advantages nothing can improve the surrogate: the step is rejected."""
    agent = tiny_agent(line_search_max_steps=3)
    inner, outer, old_log_probs, old = objective_pieces(agent)
    outer = _Batch(outer.observations, outer.actions, torch.zeros_like(outer.advantages), outer.mask)
    before = copy.deepcopy(agent.policy.state_dict())
    stats = agent._trpo_step(inner, outer, old_log_probs, old)
    assert stats["loss/line_search_accepted"] == 0.0
    for name, value in agent.policy.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_conjugate_gradient_solves_spd_system():
    from metarl.trpo import conjugate_gradient
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = m @ m.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, num_iterations=20)
    torch.testing.assert_close(a @ x, b)
    assert torch.equal(conjugate_gradient(lambda v: a @ v, torch.zeros(6, dtype=torch.float64)), torch.zeros(6, dtype=torch.float64))


def test_meta_test_step_sizes_follow_the_schedule_and_the_last_repeats():
    agent = tiny_agent(eval_inner_lrs=(0.5, 0.25))
    assert [agent.eval_lr(k) for k in range(4)] == [0.5, 0.25, 0.25, 0.25]
    assert tiny_agent(eval_inner_lrs=(), inner_lr=0.3).eval_lr(2) == 0.3
    with pytest.raises(MetaRLError, match="eval_inner_lrs"):
        tiny_agent(eval_inner_lrs=(0.5, 0.0))


def test_adapt_takes_each_meta_test_step_with_its_own_size():
    from metarl.rollout import Sampler
    from metarl.tasks import get_family

    family = get_family("Navigation2D")
    tasks = [{"goal": [0.3, -0.2]}, {"goal": [-0.4, 0.1]}]

    def stages(lrs):
        agent = tiny_agent(eval_inner_lrs=lrs, num_inner_steps=1)
        agent.policy.float()
        sampler = Sampler(family, seed=0)
        result = [t.actions for t in agent.adapt(tasks, sampler, num_stages=2, episodes_per_stage=3,
                                                 generator=torch.Generator().manual_seed(1))]
        sampler.close()
        return result

    schedule, constant = stages((0.5, 0.25)), stages((0.5,))
    torch.testing.assert_close(schedule[0], constant[0])
    torch.testing.assert_close(schedule[1], constant[1])  # the first step: 0.5 in both
    assert not torch.allclose(schedule[2], constant[2])  # the second step: 0.25 against 0.5
