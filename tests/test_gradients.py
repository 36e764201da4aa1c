"""Gradient correctness: the estimators of `pg`, `critic` and the group baselines against an exact gradient.

The problem is a 2-step MDP with a tabular softmax policy, small enough that ∇J is known in closed form.
State 0 offers K actions; action a0 leads to state 1 + a0, which offers K actions again, then the episode
ends. Rewards are r_0 = c + μ0[a0] + σ·ε and r_1 = c + μ1[a0, a1] + σ·ε with a large constant offset c, so
raw returns vary a lot from batch to batch although the actions barely matter: the case a baseline is for.
With θ[s] the logits of state s, π0 = softmax(θ[0]), π1(·|a0) = softmax(θ[1 + a0]):

    V1(a0) = Σ_a1 π1(a1|a0)·(c + μ1[a0, a1]),   Q0(a0) = c + μ0[a0] + V1(a0),   J = Σ_a0 π0(a0)·Q0(a0)
    ∇_θ[0] J = π0 ⊙ (Q0 − J),      ∇_θ[1+a0] J = π0(a0)·π1(·|a0) ⊙ (c + μ1[a0, ·] − V1(a0))

(the softmax score ∇logπ(a) = e_a − π, summed against the centred action values). γ = 1: with γ < 1 the
estimator Σ_t ∇logπ(a_t|s_t)·G_t that every library uses omits the γ^t weight and is not ∇J_γ (Nota &
Thomas 2020), so unbiasedness is only a true statement at γ = 1 here.

Each estimator runs the project's own code path: `rlbench.train.estimate_advantages` with the algorithm's
preset (pg → advantages.discounted_returns; critic → discounted_returns − V(s) with a given critic; group →
advantages.group_relative) and `rlbench.train.policy_objective` (→ losses.pg_loss), differentiated with
torch autograd. The loss is a token mean over the N·T steps of a batch, so −T·∇L is the per-episode estimate.

What is true, and therefore what is checked (mean of B seeded batches within 4 standard errors per
coordinate):
- `pg` (return-to-go, no baseline) is unbiased.
- `critic` with any action-independent baseline V(s) is unbiased: the exact value, and an inexact one.
- RLOO (group, baseline="loo", scale="none") is unbiased: the baseline of episode i uses only the others.
- The group mean baseline with scale="none" (Dr. GRPO) includes R_i itself: A_i = (G−1)/G·(R_i − mean of
  others), so its expectation is (G−1)/G·∇J, biased towards 0 by that factor (checked for G = 2, 4, 8).
- GRPO's z-scored advantage divides by the group's sample std, a function of R_i: it is *not* an unbiased
  estimator of ∇J (nor of a fixed multiple of it in general). Its mean is only reported, never asserted on.
The variance check: the total variance tr Cov of each estimator's per-batch estimate as a ratio to `pg`'s,
and the ratio of the scale-free relative variance tr Cov / ‖mean‖² (fair to the shrunk group mean and to
GRPO's arbitrary scale), are printed (`pytest -s`); every unbiased or (G−1)/G-scaled baseline must cut both
at least 10-fold.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlbench.algos import PRESETS
from rlbench.algos.config import AlgoConfig
from rlbench.rollout import Trajectories
from rlbench.train import estimate_advantages, policy_objective

K = 3
"""Actions per state; states: 0 (start) and 1..K (after action a0)."""
T = 2
"""Steps per episode (fixed, so the token mean is exactly 1/(N·T) of the per-episode sum)."""
N = 16
"""Episodes per batch (divisible by every G tested)."""
B = 10_000
"""Seeded batches per estimator."""
C = 10.0
"""Constant reward offset per step."""
SIGMA = 1.0
"""Reward noise std per step."""
Z = 4.0
"""Confidence bound in standard errors per coordinate."""
SEED = 20240605

DTYPE = torch.float64
THETA = torch.tensor([[0.5, -0.3, 0.1], [0.2, 0.0, -0.6], [-0.4, 0.3, 0.0], [0.0, 0.7, -0.2]], dtype=DTYPE)
MU0 = torch.tensor([1.0, 0.0, 0.5], dtype=DTYPE)
MU1 = torch.tensor([[0.0, 1.0, 0.3], [0.8, -0.5, 0.2], [0.4, 0.4, -1.0]], dtype=DTYPE)


def exact_parts(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(J, V1 [K], closed-form ∇J [1 + K, K]) of the MDP in the module docstring."""
    pi0, pi1 = theta[0].softmax(-1), theta[1:].softmax(-1)
    v1 = (pi1 * (C + MU1)).sum(-1)
    q0 = C + MU0 + v1
    j = (pi0 * q0).sum()
    grad = torch.empty_like(theta)
    grad[0] = pi0 * (q0 - j)
    grad[1:] = pi0[:, None] * pi1 * (C + MU1 - v1[:, None])
    return j, v1, grad


class TableCritic:
    """A critic given as a table of V(s) over the 1 + K states (what `estimate_advantages` reads)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table

    def value(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.table[inputs["obs"]]


def sample(generator: torch.Generator, batches: int = B) -> Trajectories:
    """batches·N episodes as [batches·N, T] trajectories; batch b is rows b·N … b·N + N − 1."""
    pi0, pi1 = THETA[0].softmax(-1), THETA[1:].softmax(-1)
    n = batches * N
    a0 = torch.multinomial(pi0, n, replacement=True, generator=generator)
    a1 = torch.multinomial(pi1[a0], 1, generator=generator).squeeze(1)
    noise = torch.randn(n, T, generator=generator, dtype=DTYPE) * SIGMA
    rewards = torch.stack([C + MU0[a0], C + MU1[a0, a1]], dim=1) + noise
    obs = torch.stack([torch.zeros_like(a0), 1 + a0], dim=1)
    act = torch.stack([a0, a1], dim=1)
    ends = torch.tensor([[0.0, 1.0]], dtype=DTYPE).expand(n, T).contiguous()
    return Trajectories(
        inputs={"obs": obs, "act": act},
        rewards=rewards,
        terminated=ends.clone(),
        ends=ends,
        mask=torch.ones(n, T, dtype=DTYPE),
        last_inputs=None,
    )


def per_batch_gradients(cfg: AlgoConfig, traj: Trajectories, critic: TableCritic | None) -> torch.Tensor:
    """[batches, 1 + K, K] estimates of ∇J: −T·∇θ of the algorithm's policy loss per batch, by autograd."""
    out, _ = estimate_advantages(cfg, traj, critic)
    batches = traj.rewards.shape[0] // N
    adv = out["adv"].reshape(batches, N * T)
    theta = THETA.expand(batches, *THETA.shape).clone().requires_grad_(True)  # one copy of θ per batch
    logp_all = theta.log_softmax(-1)
    batch = torch.arange(batches)[:, None, None]
    obs, act = (traj.inputs[k].reshape(batches, N, T) for k in ("obs", "act"))
    logp = logp_all[batch, obs, act].reshape(batches, N * T)
    mask = torch.ones(N * T, dtype=DTYPE)
    total = sum(  # unbind, not logp[b]: one backward stack instead of B full-size zero tensors
        policy_objective(cfg, lp, {"adv": a, "mask": mask, "logp_old": lp.detach()})
        for lp, a in zip(logp.unbind(0), adv.unbind(0))
    )
    (grad,) = torch.autograd.grad(total, theta)
    return -T * grad


GROUP_SIZES = (2, 4, 8)


def estimators() -> dict[str, tuple[AlgoConfig, TableCritic | None]]:
    pg = PRESETS["pg"].replace(gamma=1.0)
    critic = PRESETS["critic"].replace(gamma=1.0)
    j, v1, _ = exact_parts(THETA)
    exact_v = torch.cat([j[None], v1])
    group = PRESETS["grpo"].replace(gamma=1.0, policy_loss="pg", kl_coef=0.0, scale_rewards="none")
    off_by = torch.tensor([0.7, -1.5, 0.4, 1.1], dtype=DTYPE)  # any action-independent error: unbiased
    out: dict[str, tuple[AlgoConfig, TableCritic | None]] = {
        "pg": (pg, None),
        "critic (exact V)": (critic, TableCritic(exact_v)),
        "critic (inexact V)": (critic, TableCritic(exact_v + off_by)),
    }
    for g in GROUP_SIZES:
        out[f"group mean G={g}"] = (group.replace(group_size=g, group_baseline="mean"), None)
        out[f"rloo G={g}"] = (group.replace(group_size=g, group_baseline="loo"), None)
    out["grpo z-score G=4"] = (group.replace(group_size=4, scale_rewards="group"), None)
    return out


@pytest.fixture(scope="module")
def traj() -> Trajectories:
    return sample(torch.Generator().manual_seed(SEED))


@pytest.fixture(scope="module")
def estimates(traj: Trajectories) -> dict[str, torch.Tensor]:
    return {name: per_batch_gradients(cfg, traj, v).reshape(B, -1) for name, (cfg, v) in estimators().items()}


@pytest.fixture(scope="module")
def true_grad() -> torch.Tensor:
    return exact_parts(THETA)[2].flatten()


def check_mean(name: str, g: torch.Tensor, target: torch.Tensor) -> None:
    mean, se = g.mean(0), g.std(0) / math.sqrt(B)
    z = (mean - target).abs() / se
    assert (z < Z).all(), (
        f"{name}: mean {mean.numpy().round(4)} vs expected {target.numpy().round(4)}; "
        f"|z| per coordinate {z.numpy().round(2)} (bound {Z})"
    )


def total_variance(g: torch.Tensor) -> float:
    return float(g.var(0).sum())


def test_closed_form_gradient_matches_autograd_of_exact_objective() -> None:
    theta = THETA.clone().requires_grad_(True)
    j, _, closed = exact_parts(theta)
    (auto,) = torch.autograd.grad(j, theta)
    torch.testing.assert_close(auto, closed.detach())
    # J is mostly the offset: 2c plus the action-dependent part.
    assert abs(j.item() - 2 * C) < 2.0


UNBIASED = ("pg", "critic (exact V)", "critic (inexact V)", *[f"rloo G={g}" for g in GROUP_SIZES])
BASELINES = (*UNBIASED[1:], *[f"group mean G={g}" for g in GROUP_SIZES])


@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_estimators(name: str, estimates, true_grad) -> None:
    check_mean(name, estimates[name], true_grad)


@pytest.mark.parametrize("g", GROUP_SIZES)
def test_group_mean_baseline_is_shrunk_by_g_minus_one_over_g(g: int, estimates, true_grad) -> None:
    est = estimates[f"group mean G={g}"]
    check_mean(f"group mean G={g}", est, (g - 1) / g * true_grad)
    # And the shrinkage is real, not within noise: the fitted scale ⟨mean, ∇J⟩/‖∇J‖² is far from 1.
    scale = float(est.mean(0) @ true_grad / (true_grad @ true_grad))
    assert scale == pytest.approx((g - 1) / g, abs=0.05), scale


def relative_variance(g: torch.Tensor) -> float:
    """tr Cov / ‖mean‖²: scale-free, fair to a shrunk (group mean) or rescaled (z-score) estimate."""
    mean = g.mean(0)
    return total_variance(g) / float(mean @ mean)


def test_baselines_reduce_variance(estimates, true_grad) -> None:
    """Variance reduction of each baseline vs `pg`: raw (tr Cov ratio) and scale-free (rel. var. ratio)."""
    raw, free, lines = {}, {}, []
    for name, est in estimates.items():
        mean = est.mean(0)
        raw[name] = total_variance(est) / total_variance(estimates["pg"])
        free[name] = relative_variance(est) / relative_variance(estimates["pg"])
        cosine = float(mean @ true_grad / (mean.norm() * true_grad.norm()))
        lines.append(
            f"  {name:19s} tr Cov {total_variance(est):8.4f}  ratio to pg {raw[name]:.4f}"
            f" ({1 / raw[name]:5.1f}x less)  rel. var {relative_variance(est):7.3f}  ratio {free[name]:.4f}"
            f" ({1 / free[name]:5.1f}x less)  cos(mean, ∇J) {cosine:.4f}"
        )
    report = (
        f"per-batch policy-gradient estimates on the 2-step MDP, {B} batches of {N} episodes, reward offset "
        f"c = {C}/step, noise σ = {SIGMA}; ‖∇J‖ = {float(true_grad.norm()):.4f}\n" + "\n".join(lines)
    )
    print("\n" + report)
    for name in BASELINES:
        assert raw[name] < 0.1 and free[name] < 0.1, f"{name} does not reduce variance 10-fold:\n{report}"
    # The mean baseline is RLOO times (G−1)/G exactly, so the scale-free variances are equal.
    for g in GROUP_SIZES:
        assert free[f"group mean G={g}"] == pytest.approx(free[f"rloo G={g}"], rel=1e-9), report
    # A better baseline reduces more: the exact value beats an inexact one; at a fixed batch of N episodes a
    # larger group gives each episode a baseline averaged over more others.
    assert free["critic (exact V)"] < free["critic (inexact V)"], report
    assert free["rloo G=8"] < free["rloo G=4"] < free["rloo G=2"], report


def test_clipped_surrogate_gradient_equals_pg_at_the_old_policy() -> None:
    """At π = π_old (a first minibatch step) the clipped surrogate has the pg loss's gradient, so the
    statements above carry over to the `grpo` preset's clipped objective."""
    traj = sample(torch.Generator().manual_seed(SEED + 1), batches=200)
    grpo = PRESETS["grpo"].replace(gamma=1.0, group_size=4)
    for scale in ("group", "none"):
        cfg = grpo.replace(scale_rewards=scale)
        clipped = per_batch_gradients(cfg, traj, None)
        torch.testing.assert_close(clipped, per_batch_gradients(cfg.replace(policy_loss="pg"), traj, None))
