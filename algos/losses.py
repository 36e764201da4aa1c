"""Losses: pure functions of per-step tensors and a validity mask (shape [B] or [N, T])."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, agg: str = "token", seq: Tensor | None = None) -> Tensor:
    """Mean of x over valid entries. `token`: Σ x·m / Σ m. `sequence`: the mean over sequences of each
    sequence's mean, where a sequence is a row of [N, T] input, or the entries of flat [B] input sharing an
    id in `seq` (e.g. the steps of one episode)."""
    if agg == "sequence" and x.dim() == 2:
        per_row = (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_row[mask.sum(dim=1) > 0].mean()
    if agg == "sequence" and seq is not None:
        ids = torch.unique(seq, return_inverse=True)[1]
        sums = torch.zeros(int(ids.max()) + 1).index_add(0, ids, x * mask)
        counts = torch.zeros_like(sums).index_add(0, ids, mask)
        return (sums / counts.clamp(min=1.0))[counts > 0].mean()
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def pg_loss(logp: Tensor, adv: Tensor, mask: Tensor, agg: str = "token", seq: Tensor | None = None) -> Tensor:
    """Vanilla policy gradient: L = −E[log π(a|s) · A]."""
    return -masked_mean(logp * adv, mask, agg, seq)


def clipped_surrogate(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float | None,
    clip_high: float | None,
    agg: str = "token",
    seq: Tensor | None = None,
) -> Tensor:
    """PPO: L = −E[min(r·A, clip(r, 1−ε_low, 1+ε_high)·A)], r = π/π_old; clip_low None → −E[r·A]."""
    ratio = torch.exp(logp - logp_old)
    if clip_low is None:
        return -masked_mean(ratio * adv, mask, agg, seq)
    high = clip_low if clip_high is None else clip_high
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + high)
    return -masked_mean(torch.min(ratio * adv, clipped * adv), mask, agg, seq)


def value_loss(values: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Critic regression: L_V = ½·E[(V(s) − R̂)²]."""
    return 0.5 * masked_mean((values - targets) ** 2, mask)


def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-step KL(π‖π_ref) estimate from samples of π: exp(ref − logp) − (ref − logp) − 1 ≥ 0 (DeepSeekMath eq. 4)."""
    diff = ref_logp - logp
    return torch.exp(diff) - diff - 1.0


def kl_estimate(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Schulman's per-sample estimators of KL(π‖π_ref) at samples of π, with log r = ref_logp − logp:
    k1 = −log r (unbiased), k2 = ½(log r)² (biased, ≥ 0), k3 = r − 1 − log r (unbiased, ≥ 0).

    As *values* k1 and k3 are unbiased; as *gradients* they differ (rlbench.kl_bias enumerates them):
    on-policy, k1 in the reward and k2 in the loss follow ∇KL(π‖π_ref), k3 in the loss follows ∇KL(π_ref‖π)
    and k1 in the loss has zero expected gradient.
    """
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    if estimator == "k3":
        return k3(logp, ref_logp)
    raise ValueError(f"kl estimator {estimator!r}: allowed values are 'k1', 'k2', 'k3'")


def kl_loss(
    logp: Tensor, ref_logp: Tensor, logp_old: Tensor, mask: Tensor, estimator: str, importance_weight: bool
) -> Tensor:
    """A loss-placed KL term: E[w · k(logp, ref_logp)] over valid steps, w = π/π_old detached (an importance
    weight of the samples, not a term to differentiate) when `importance_weight`, else 1. Samples come from
    π_old, so without w the expected gradient after the first epoch is E_{π_old}[∇k], not E_π[∇k]; with it,
    exactly E_π[∇k] for one step (rlbench.kl_bias). DeepSeek-V3.2 also weights its k3 term by π/π_old."""
    per_step = kl_estimate(logp, ref_logp, estimator)
    if importance_weight:
        per_step = torch.exp(logp - logp_old).detach() * per_step
    return masked_mean(per_step, mask)
