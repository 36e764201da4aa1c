"""Analytic unit tests of the algorithm components on hand-computed values (DESIGN.md §2, §3, §5).

Every expected number is written out in the test with its arithmetic in a comment, so a failure points at the
formula, not at a stored fingerprint.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlbench.algos import PRESETS
from rlbench.algos import advantages as A
from rlbench.algos import losses as L
from rlbench.metrics import explained_variance, gradient_noise
from rlbench.rollout import Trajectories
from rlbench.train import estimate_advantages


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, t(expected) if not isinstance(expected, torch.Tensor) else expected)


# ----------------------------------------------------------------------------------------------------------
# discounted_returns


def test_discounted_returns_episode_ends_and_bootstrap() -> None:
    rewards = t([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    ends = t([[0, 1, 0, 1], [0, 0, 0, 1]])
    # No bootstrap (γ = 0.5), row 0: G3 = 4; G2 = 3 + .5·4 = 5; G1 = 2 (episode ends); G0 = 1 + .5·2 = 2.
    # Row 1, one episode: G3 = 1; G2 = 1 + .5 = 1.5; G1 = 1 + .75 = 1.75; G0 = 1 + .875 = 1.875.
    close(A.discounted_returns(rewards, ends, 0.5), [[2.0, 2.0, 5.0, 4.0], [1.875, 1.75, 1.5, 1.0]])
    # Bootstrap where ends is set, row 0 with V = 10 at t=1 and 8 at t=3 (bootstrap elsewhere is ignored):
    # G3 = 4 + .5·8 = 8; G2 = 3 + .5·8 = 7; G1 = 2 + .5·10 = 7; G0 = 1 + .5·7 = 4.5.
    # Row 1 with 2 at t=3: G3 = 1 + 1 = 2; G2 = 1 + 1 = 2; G1 = 2; G0 = 2.
    bootstrap = t([[99.0, 10.0, 99.0, 8.0], [99.0, 99.0, 99.0, 2.0]])
    close(A.discounted_returns(rewards, ends, 0.5, bootstrap), [[4.5, 7.0, 7.0, 8.0], [2.0, 2.0, 2.0, 2.0]])


def test_discounted_returns_gamma_one_and_zero() -> None:
    rewards, ends = t([[1.0, 2.0, 3.0]]), t([[0, 0, 1]])
    # γ = 1: plain sums to go 6, 5, 3; γ = 0: the rewards themselves.
    close(A.discounted_returns(rewards, ends, 1.0), [[6.0, 5.0, 3.0]])
    close(A.discounted_returns(rewards, ends, 0.0), [[1.0, 2.0, 3.0]])


# ----------------------------------------------------------------------------------------------------------
# gae


def _gae_example() -> dict[str, torch.Tensor]:
    """Two streams of 3 steps, γ = 0.9.

    Stream 0: terminal at t=1 (next value 7 must be ignored), a new episode at t=2 cut by the rollout end
    (bootstrap from V = 4). Stream 1: truncated at t=1 (bootstrap from V(final obs) = 5), then cut at t=2
    (V = 1).
    """
    return {
        "rewards": t([[1.0, 2.0, 3.0], [0.0, 1.0, 1.0]]),
        "values": t([[0.5, 1.0, 2.0], [1.0, 2.0, 0.5]]),
        "next_values": t([[1.0, 7.0, 4.0], [2.0, 5.0, 1.0]]),
        "terminated": t([[0, 1, 0], [0, 0, 0]]),
        "ends": t([[0, 1, 1], [0, 1, 1]]),
    }


# δ_t = r_t + γ·V' ·(1 − term) − V:
#   stream 0: δ0 = 1 + .9·1 − .5 = 1.4;  δ1 = 2 + 0 − 1 = 1.0 (terminal);  δ2 = 3 + .9·4 − 2 = 4.6
#   stream 1: δ0 = 0 + .9·2 − 1 = 0.8;   δ1 = 1 + .9·5 − 2 = 3.5 (truncated);  δ2 = 1 + .9·1 − .5 = 1.4
DELTA = [[1.4, 1.0, 4.6], [0.8, 3.5, 1.4]]


def test_gae_lambda_zero_is_one_step_td() -> None:
    adv, targets = A.gae(**_gae_example(), gamma=0.9, lam=0.0)
    close(adv, DELTA)
    close(targets, t(DELTA) + _gae_example()["values"])


def test_gae_lambda_one_is_bootstrapped_return_minus_value() -> None:
    ex = _gae_example()
    adv, targets = A.gae(**ex, gamma=0.9, lam=1.0)
    # Stream 0: A2 = 4.6; A1 = 1.0 (episode ended); A0 = 1.4 + .9·1.0 = 2.3.
    #   Returns: G2 = 3 + .9·4 = 6.6, G1 = 2, G0 = 1 + .9·2 = 2.8; minus V (.5, 1, 2) = 2.3, 1.0, 4.6. ✓
    # Stream 1: A2 = 1.4; A1 = 3.5 (truncation: no recursion across); A0 = 0.8 + .9·3.5 = 3.95.
    #   Returns: G2 = 1 + .9·1 = 1.9, G1 = 1 + .9·5 = 5.5, G0 = 0 + .9·5.5 = 4.95; minus V (1, 2, .5). ✓
    close(adv, [[2.3, 1.0, 4.6], [3.95, 3.5, 1.4]])
    close(targets, [[2.8, 2.0, 6.6], [4.95, 5.5, 1.9]])
    # The same through discounted_returns with bootstrap V(s_{t+1})·(1 − terminated) at the ends.
    returns = A.discounted_returns(ex["rewards"], ex["ends"], 0.9, ex["next_values"] * (1 - ex["terminated"]))
    close(adv, returns - ex["values"])


def test_gae_intermediate_lambda() -> None:
    adv, _ = A.gae(**_gae_example(), gamma=0.9, lam=0.5)
    # γλ = .45: stream 0: A0 = 1.4 + .45·1.0 = 1.85; stream 1: A0 = 0.8 + .45·3.5 = 2.375; A1, A2 = δ.
    close(adv, [[1.85, 1.0, 4.6], [2.375, 3.5, 1.4]])


# ----------------------------------------------------------------------------------------------------------
# group_relative

SQRT_14_3 = math.sqrt(14.0 / 3.0)  # sample std of (1, 2, 3, 6): mean 3, squares 4+1+0+9 = 14, /(4−1)


def test_group_zscore_and_all_equal_group() -> None:
    adv, frac = A.group_relative(t([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0]), group_size=4)
    # Group 0: (R − 3)/std = (−2, −1, 0, 3)/√(14/3); group 1 all equal → 0 (not 0/0) and counted: 1 of 2.
    close(adv, [-2 / SQRT_14_3, -1 / SQRT_14_3, 0.0, 3 / SQRT_14_3, 0.0, 0.0, 0.0, 0.0])
    assert frac == pytest.approx(0.5)


def test_group_std_below_floor_counts_as_zero_std() -> None:
    # std of (1, 1 + 1e-6) = 1e-6/√2 ≤ 1e-4 → advantage 0, fraction 1.
    adv, frac = A.group_relative(t([1.0, 1.0 + 1e-6]), group_size=2)
    close(adv, [0.0, 0.0])
    assert frac == 1.0


def test_group_scale_none_keeps_only_the_mean_baseline() -> None:
    adv, frac = A.group_relative(t([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0]), group_size=4, scale="none")
    # Dr. GRPO: R − mean = (−2, −1, 0, 3); the equal group still gives 0 and still counts.
    close(adv, [-2.0, -1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0])
    assert frac == pytest.approx(0.5)


def test_group_leave_one_out_baseline() -> None:
    returns = t([1.0, 2.0, 3.0, 6.0])
    adv, _ = A.group_relative(returns, group_size=4, scale="none", baseline="loo")
    # R_i − mean of the other three: 1 − 11/3 = −8/3; 2 − 10/3 = −4/3; 3 − 9/3 = 0; 6 − 6/3 = 4.
    close(adv, [-8 / 3, -4 / 3, 0.0, 4.0])
    # With scale="group" the same leave-one-out difference is divided by the group's sample std.
    adv, _ = A.group_relative(returns, group_size=4, scale="group", baseline="loo")
    close(adv, t([-8 / 3, -4 / 3, 0.0, 4.0]) / SQRT_14_3)


def test_single_group_of_size_g() -> None:
    # N = G = 3, one group (0, 0, 3): mean 1, deviations (−1, −1, 2), std = √((1+1+4)/2) = √3.
    adv, frac = A.group_relative(t([0.0, 0.0, 3.0]), group_size=3)
    close(adv, t([-1.0, -1.0, 2.0]) / math.sqrt(3.0))
    assert frac == 0.0
    # G = 2 z-scores are ±1/√2 whatever the gap: (R − mean) = ±d/2, std = d/√2.
    adv, _ = A.group_relative(t([0.0, 10.0]), group_size=2)
    close(adv, t([-1.0, 1.0]) / math.sqrt(2.0))


def test_group_size_must_divide_the_batch() -> None:
    with pytest.raises(ValueError, match="groups of 4"):
        A.group_relative(t([1.0, 2.0, 3.0]), group_size=4)


def test_group_outcome_supervision_broadcasts_to_every_step() -> None:
    """GRPO gives every step of rollout i the group advantage of its total (undiscounted, valid) return."""
    cfg = PRESETS["grpo"].replace(group_size=2, scale_rewards="none")
    traj = Trajectories(
        inputs={},
        rewards=t([[1.0, 1.0, 9.0], [0.0, 4.0, 0.0]]),  # row 0's 9.0 is a padded (mask 0) step
        terminated=t([[0, 1, 0], [0, 0, 1]]),
        ends=t([[0, 1, 1], [0, 0, 1]]),
        mask=t([[1, 1, 0], [1, 1, 1]]),
        last_inputs=None,
    )
    out, info = estimate_advantages(cfg, traj, None)
    # Returns 2 and 4, mean 3 → advantages −1 and +1 on every step of each row.
    close(out["adv"], [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    assert info["train/frac_reward_zero_std"] == 0.0


# ----------------------------------------------------------------------------------------------------------
# losses


def test_masked_mean_token_vs_sequence() -> None:
    x = t([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0], [9.0, 9.0, 9.0]])
    mask = t([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    # token: (1+2+3+4)/4 = 2.5; sequence: mean of row means (2, 4) = 3 (the empty row is skipped).
    assert L.masked_mean(x, mask, "token").item() == pytest.approx(2.5)
    assert L.masked_mean(x, mask, "sequence").item() == pytest.approx(3.0)
    # 1-D input: sequence falls back to token; an all-zero mask gives 0, not NaN.
    assert L.masked_mean(t([1.0, 3.0, 5.0]), t([1, 0, 1]), "sequence").item() == pytest.approx(3.0)
    assert L.masked_mean(t([1.0, 3.0]), t([0, 0])).item() == 0.0


def test_pg_loss_value_and_gradient() -> None:
    logp = t([-1.0, -2.0, -0.5]).requires_grad_()
    adv, mask = t([2.0, 1.0, 4.0]), t([1, 1, 0])
    loss = L.pg_loss(logp, adv, mask)
    # −((−1)(2) + (−2)(1)) / 2 = 2 (the masked step does not count).
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    close(logp.grad, [-1.0, -0.5, 0.0])  # ∂L/∂logp_i = −A_i·m_i / Σm
    # Sequence aggregation on [N, T]: row 0 mean of (−1·2, −2·1) = −2 over 2 steps; row 1 (−1·4) = −4 over 1.
    logp2, adv2 = t([[-1.0, -2.0], [-1.0, 5.0]]), t([[2.0, 1.0], [4.0, 7.0]])
    mask2 = t([[1, 1], [1, 0]])
    assert L.pg_loss(logp2, adv2, mask2, "sequence").item() == pytest.approx(-(-2.0 + -4.0) / 2)  # 3
    assert L.pg_loss(logp2, adv2, mask2, "token").item() == pytest.approx(-(-2.0 - 2.0 - 4.0) / 3)  # 8/3


def _surrogate(ratio: float, adv: float, clip_low, clip_high=None) -> tuple[float, float]:
    """(loss, ∂loss/∂logp) of one step with π/π_old = ratio."""
    logp = torch.tensor([math.log(ratio)], dtype=torch.float64, requires_grad=True)
    loss = L.clipped_surrogate(logp, t([0.0]), t([adv]), t([1.0]), clip_low, clip_high)
    loss.backward()
    return loss.item(), logp.grad.item()


@pytest.mark.parametrize(
    "ratio, adv, loss, grad",
    [
        # L = −min(r·A, clip(r, .8, 1.2)·A); ∂L/∂logp = −r·A where the unclipped term is the min, else 0.
        (1.1, 1.0, -1.1, -1.1),  # inside the range: min(1.1, 1.1)
        (1.5, 1.0, -1.2, 0.0),  # A > 0, r above 1+ε: min(1.5, 1.2) = 1.2, clipped, no gradient
        (0.5, 1.0, -0.5, -0.5),  # A > 0, r below 1−ε: min(0.5, 0.8) = 0.5, pessimistic term, gradient flows
        (1.1, -1.0, 1.1, 1.1),  # inside, A < 0: min(−1.1, −1.1)
        (1.5, -1.0, 1.5, 1.5),  # A < 0, r above: min(−1.5, −1.2) = −1.5, unclipped, gradient flows
        (0.5, -1.0, 0.8, 0.0),  # A < 0, r below: min(−0.5, −0.8) = −0.8, clipped, no gradient
    ],
)
def test_clipped_surrogate_symmetric(ratio: float, adv: float, loss: float, grad: float) -> None:
    got_loss, got_grad = _surrogate(ratio, adv, 0.2)
    assert got_loss == pytest.approx(loss)
    assert got_grad == pytest.approx(grad)


def test_clipped_surrogate_asymmetric_and_unclipped() -> None:
    # DAPO ε_low = .2, ε_high = .28: range [0.8, 1.28].
    assert _surrogate(1.25, 1.0, 0.2, 0.28) == pytest.approx((-1.25, -1.25))  # inside 1.28 (sym.: clipped)
    assert _surrogate(1.25, 1.0, 0.2) == pytest.approx((-1.2, 0.0))
    assert _surrogate(1.5, 1.0, 0.2, 0.28) == pytest.approx((-1.28, 0.0))  # min(1.5, 1.28)
    assert _surrogate(0.5, -1.0, 0.2, 0.28) == pytest.approx((0.8, 0.0))  # the low side still uses ε_low
    # clip None: −r·A, always with gradient −r·A.
    assert _surrogate(3.0, 1.0, None) == pytest.approx((-3.0, -3.0))
    assert _surrogate(0.1, -2.0, None) == pytest.approx((0.2, 0.2))


def test_clipped_surrogate_masks_and_averages() -> None:
    logp, old = t([math.log(1.1), math.log(1.5), 0.0]), t([0.0, 0.0, 0.0])
    # Per step (ε = .2, A = 1, 1, 5): −1.1, −1.2, masked → mean over 2 = −1.15.
    loss = L.clipped_surrogate(logp, old, t([1.0, 1.0, 5.0]), t([1, 1, 0]), 0.2, None)
    assert loss.item() == pytest.approx(-1.15)


def test_value_loss() -> None:
    values, targets = t([1.0, 2.0, 3.0]), t([2.0, 2.0, 0.0])
    # ½·mean((−1)², 0², 3²) = ½·10/3 = 5/3; with the last step masked ½·(1 + 0)/2 = 1/4.
    assert L.value_loss(values, targets, t([1, 1, 1])).item() == pytest.approx(5 / 3)
    assert L.value_loss(values, targets, t([1, 1, 0])).item() == pytest.approx(0.25)


def test_k3_hand_value_nonnegative_and_zero_when_equal() -> None:
    # logp = ln .5, ref = ln .2: diff = ln .4 = −0.916291; k3 = .4 + 0.916291 − 1 = 0.316291.
    assert L.k3(t([math.log(0.5)]), t([math.log(0.2)])).item() == pytest.approx(0.4 - math.log(0.4) - 1.0)
    assert L.k3(t([0.3]), t([0.3])).item() == 0.0
    g = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(1000, generator=g) * 3, torch.randn(1000, generator=g) * 3
    assert (L.k3(logp, ref) >= 0).all()


def test_k3_is_unbiased_for_kl_on_a_categorical() -> None:
    pi, ref = t([0.5, 0.3, 0.2]), t([0.2, 0.3, 0.5])
    # KL(π‖ref) = .5·ln 2.5 + .3·ln 1 + .2·ln .4 = (.5 − .2)·ln 2.5 = 0.274887.
    kl = 0.3 * math.log(2.5)
    per_action = L.k3(pi.log(), ref.log())
    # Exact expectation under π: Σ π(ref/π − ln(ref/π) − 1) = Σ ref − 1 + KL = KL.
    assert (pi * per_action).sum().item() == pytest.approx(kl)
    # Monte Carlo: 200k samples of π; std of k3 under π is < 0.7, so the standard error is < 0.0016.
    a = torch.multinomial(pi, 200_000, replacement=True, generator=torch.Generator().manual_seed(1))
    assert per_action[a].mean().item() == pytest.approx(kl, abs=0.005)


# ----------------------------------------------------------------------------------------------------------
# metrics


def test_gradient_noise_identical_gradients() -> None:
    cos, rel = gradient_noise(t([[1.0, 2.0, 3.0]] * 3))
    assert cos == pytest.approx(1.0)
    assert rel == pytest.approx(0.0)


def test_gradient_noise_orthogonal_pairs() -> None:
    # e1, e2: cosine 0; ḡ = (.5, .5), ‖g_k − ḡ‖² = .25 + .25 = .5 each, ‖ḡ‖² = .5 → rel var 1.
    assert gradient_noise(t([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx((0.0, 1.0))
    # e1..e4: ḡ = ¼·1, ‖ḡ‖² = 4/16 = .25; ‖e_k − ḡ‖² = .75² + 3·.25² = .75 → rel var 3.
    assert gradient_noise(torch.eye(4, dtype=torch.float64)) == pytest.approx((0.0, 3.0))
    # Two orthogonal pairs (e1, e2, e1, e2): 12 ordered pairs, 4 with cosine 1 → mean 1/3; rel var 1 again.
    assert gradient_noise(t([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])) == pytest.approx((1 / 3, 1.0))


def test_gradient_noise_parallel_different_lengths() -> None:
    # (1, 2, 3)·e1: cosine 1; ḡ = 2·e1, squared deviations 1, 0, 1 → mean 2/3, / ‖ḡ‖² = 4 → 1/6.
    assert gradient_noise(t([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])) == pytest.approx((1.0, 1 / 6))


def test_gradient_noise_all_zero_is_nan() -> None:
    cos, rel = gradient_noise(torch.zeros(4, 5))
    assert math.isnan(cos) and math.isnan(rel)


def test_explained_variance() -> None:
    targets = t([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(targets.clone(), targets) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4, dtype=torch.float64), targets) == pytest.approx(0.0)
    # Residual (0, 0, 0, −1): var = (3·.25² + .75²)/3 = .25; Var(targets) = 5/3 → 1 − .25/(5/3) = 0.85.
    assert explained_variance(t([1.0, 2.0, 3.0, 5.0]), targets) == pytest.approx(0.85)
    # Worse than a constant is negative: residual (−2, 2, −2, 2) has var 16/3 → 1 − (16/3)/(5/3) = −2.2.
    assert explained_variance(targets + t([2.0, -2.0, 2.0, -2.0]), targets) == pytest.approx(-2.2)
    assert math.isnan(explained_variance(t([1.0, 2.0]), t([3.0, 3.0])))


def test_sequence_aggregation_of_flat_steps_uses_episode_ids():
    # Two episodes of flat steps: ids [0, 0, 0, 1]; values [1, 2, 3, 10] → per-episode means 2 and 10 → 6,
    # while the token mean is 16 / 4 = 4.
    x = torch.tensor([1.0, 2.0, 3.0, 10.0])
    mask = torch.ones(4)
    seq = torch.tensor([7, 7, 7, 9])
    assert L.masked_mean(x, mask, "sequence", seq).item() == pytest.approx(6.0)
    assert L.masked_mean(x, mask, "token", seq).item() == pytest.approx(4.0)


def test_episode_ids_restart_after_each_end():
    ends = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    zeros = torch.zeros(2, 4)
    traj = Trajectories(inputs={}, rewards=zeros, terminated=zeros, ends=ends, mask=torch.ones(2, 4), last_inputs=None)
    # Stream 0 holds episodes 0 (steps 0-1) and 1 (steps 2-3); stream 1 continues with episode 2.
    assert traj.episode_ids().tolist() == [[0, 0, 1, 1], [2, 2, 2, 2]]


def test_noise_scale_parts_recover_the_true_noise_scale_at_any_batch_size():
    # Per-sample gradients g = G + σ·ε in P dims: tr(Σ) = P·σ², B_simple = tr(Σ) / |G|².
    from rlbench.metrics import noise_scale_parts

    torch.manual_seed(0)
    P, sigma = 50, 2.0
    G = torch.randn(P) * 0.5
    true_b = P * sigma**2 / float(G @ G)
    for big in (256, 4096):
        small = big // 4
        parts = [noise_scale_parts((G + sigma * torch.randn(4, small, P)).mean(1), small, big) for _ in range(300)]
        estimate = sum(t for t, _ in parts) / sum(g for _, g in parts)
        assert estimate == pytest.approx(true_b, rel=0.1), (big, estimate, true_b)
