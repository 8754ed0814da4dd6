import numpy as np
import torch

from metarl.returns import discounted_returns, generalized_advantages, normalize_advantages


def naive_returns(rewards, mask, discount):
    T, B = rewards.shape
    out = np.zeros((T, B))
    for b in range(B):
        for t in range(T):
            if mask[t, b] == 0:
                continue
            out[t, b] = sum(discount ** (k - t) * rewards[k, b] for k in range(t, T) if mask[k, b])
    return out


def naive_gae(rewards, values, next_values, terminated, ends, mask, discount, lam):
    T, B = rewards.shape
    out = np.zeros((T, B))
    for b in range(B):
        for t in range(T):
            if not mask[t, b]:
                continue
            total, weight = 0.0, 1.0
            for k in range(t, T):
                if not mask[k, b]:
                    break
                delta = rewards[k, b] + discount * (0 if terminated[k, b] else next_values[k, b]) - values[k, b]
                total += weight * delta
                if ends[k, b]:
                    break
                weight *= discount * lam
            out[t, b] = total
    return out


def test_discounted_returns_match_naive_reference():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(7, 3))
    mask = np.ones((7, 3))
    mask[5:, 1] = 0
    got = discounted_returns(torch.tensor(rewards), torch.tensor(mask), discount=0.9)
    np.testing.assert_allclose(got.numpy(), naive_returns(rewards, mask, 0.9), rtol=1e-10)


def test_gae_matches_naive_reference_with_termination_and_truncation():
    rng = np.random.default_rng(1)
    T, B = 9, 4
    rewards, values, next_values = (rng.normal(size=(T, B)) for _ in range(3))
    mask = np.ones((T, B))
    terminated = np.zeros((T, B), dtype=bool)
    ends = np.zeros((T, B), dtype=bool)
    terminated[4, 0] = ends[4, 0] = True
    mask[5:, 0] = 0
    ends[T - 1, 1:] = True  # truncated: bootstraps from next_values
    ends[3, 2] = True  # an episode end inside an RL² trial (recursion stops, no termination)
    args = [torch.tensor(x) for x in (rewards, values, next_values, terminated, ends, mask)]
    for lam in (0.0, 0.95, 1.0):
        got = generalized_advantages(*args, discount=0.97, gae_lambda=lam)
        expected = naive_gae(rewards, values, next_values, terminated, ends, mask, 0.97, lam)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_gae_lambda_one_with_zero_values_is_the_discounted_return():
    rewards = torch.rand(6, 2, dtype=torch.float64)
    mask = torch.ones(6, 2, dtype=torch.float64)
    terminated = torch.zeros(6, 2, dtype=torch.bool)
    terminated[-1] = True
    zeros = torch.zeros_like(rewards)
    gae = generalized_advantages(rewards, zeros, zeros, terminated, terminated, mask, discount=0.9, gae_lambda=1.0)
    torch.testing.assert_close(gae, discounted_returns(rewards, mask, discount=0.9))


def test_normalize_advantages_per_slice_ignores_padding():
    adv = torch.randn(5, 3, 4, dtype=torch.float64)
    mask = torch.ones(5, 3, 4, dtype=torch.float64)
    mask[3:, 1] = 0
    out = normalize_advantages(adv, mask, dim=(0, 2))
    for n in range(3):
        values = out[:, n][mask[:, n] > 0]
        assert abs(values.mean().item()) < 1e-9
        assert abs(values.std(unbiased=False).item() - 1) < 1e-6
    assert (out[3:, 1] == 0).all()
