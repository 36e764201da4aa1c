"""Advantage estimators: pure functions of a trajectory batch laid out as [N streams, T steps]."""

from __future__ import annotations

import torch
from torch import Tensor


def discounted_returns(rewards: Tensor, ends: Tensor, gamma: float, bootstrap: Tensor | None = None) -> Tensor:
    """Return-to-go G_t = r_t + γ·G_{t+1}, restarted where `ends` is set: there G_t = r_t + γ·bootstrap_t.

    rewards, ends, bootstrap: [N, T] (ends is 0/1; bootstrap defaults to 0, i.e. no critic). Returns [N, T].
    """
    bootstrap = torch.zeros_like(rewards) if bootstrap is None else bootstrap
    out = torch.zeros_like(rewards)
    following = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        following = rewards[:, t] + gamma * torch.where(ends[:, t].bool(), bootstrap[:, t], following)
        out[:, t] = following
    return out


def centred(returns: Tensor, mask: Tensor) -> Tensor:
    """Returns minus their batch mean over valid steps, G_t − mean_{valid} G (a constant baseline).

    returns, mask: [N, T] (mask 0/1). Returns [N, T]; padded steps get 0.
    """
    mean = (returns * mask).sum() / mask.sum().clamp(min=1.0)
    return (returns - mean) * mask


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    ends: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016).

    δ_t = r_t + γ·V(s_{t+1})·(1 − terminated_t) − V(s_t);  A_t = δ_t + γλ·(1 − ends_t)·A_{t+1}.
    All inputs [N, T]; `next_values` holds V(s_{t+1}), or V(final obs) where an episode was truncated or the
    rollout stopped. Returns (advantages, value targets A + V), both [N, T].
    """
    delta = rewards + gamma * next_values * (1.0 - terminated) - values
    adv = torch.zeros_like(rewards)
    following = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        following = delta[:, t] + gamma * lam * (1.0 - ends[:, t]) * following
        adv[:, t] = following
    return adv, adv + values


def group_relative(
    returns: Tensor, group_size: int, scale: str = "group", baseline: str = "mean", std_floor: float = 1e-4
) -> tuple[Tensor, float]:
    """Group-relative advantage of each trajectory's total return (GRPO outcome supervision).

    returns: [N] with N = groups·G, group j in rows j·G … j·G+G−1. `baseline` "mean": R_i − mean_G;
    "loo": R_i − mean of the other G−1 (RLOO). `scale` "group" divides by the group's sample std, "none" does
    not (Dr. GRPO). A group whose std ≤ std_floor gets advantage 0. Returns ([N] advantages, fraction of such
    zero-std groups).
    """
    if returns.numel() % group_size:
        raise ValueError(f"{returns.numel()} returns do not split into groups of {group_size}")
    grouped = returns.reshape(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    adv = grouped - mean
    if baseline == "loo":
        adv = adv * group_size / (group_size - 1)
    flat = std <= std_floor
    if scale == "group":
        adv = adv / torch.where(flat, torch.ones_like(std), std)
    adv = torch.where(flat, torch.zeros_like(adv), adv)
    return adv.reshape(-1), flat.float().mean().item()
