"""The gradient-noise probe's K per-split gradients: one batched computation where the policy allows it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

Objective = Callable[[Tensor, dict[str, Tensor]], Tensor]
"""(log π(a|s) of a part's units, the part) → the scalar loss whose gradient is probed."""


def split_gradients(objective: Objective, policy: nn.Module, parts: list[dict[str, Tensor]], batched: bool) -> Tensor:
    """[K, P] gradients g_k = ∇_θ objective(log π_θ(parts[k]), parts[k]) at the current θ, flattened in the order
    of policy.parameters() (P trainable numbers; a parameter without a gradient contributes zeros).

    `batched` computes all K in one vmapped forward and one backward (`_stacked`); otherwise one forward and
    backward per part. Both give the same gradients up to float32 rounding; neither changes θ or its .grad.
    """
    if batched:
        return _stacked(objective, policy, parts)
    params = [p for p in policy.parameters() if p.requires_grad]
    grads = []
    for part in parts:
        logp, _ = policy.evaluate(part)
        grads.append(_flat(torch.autograd.grad(objective(logp, part), params, allow_unused=True), params, 0))
    return torch.stack(grads)


class _Evaluate(nn.Module):
    """policy.evaluate's log-probabilities as a forward, so functional_call can run it with other parameters."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, units: dict[str, Tensor]) -> Tensor:
        return self.policy.evaluate(units)[0]


def _stacked(objective: Objective, policy: nn.Module, parts: list[dict[str, Tensor]]) -> Tensor:
    """A copy θ_k of the parameters per part; log π_{θ_k}(parts[k]) for all k in one vmapped forward over the
    parts padded to equal length (with copies of their first unit, whose outputs are dropped); one backward of
    Σ_k objective_k. The parts are disjoint, so ∂(Σ_j objective_j)/∂θ_k = ∇_θ objective_k at θ_k = θ."""
    named = [(f"policy.{name}", p) for name, p in policy.named_parameters() if p.requires_grad]
    copies = {name: p.detach().expand(len(parts), *p.shape).clone().requires_grad_() for name, p in named}
    rows = [part["mask"].shape[0] for part in parts]
    padded = {key: torch.stack([_pad(part[key], max(rows)) for part in parts]) for key in parts[0]}
    module = _Evaluate(policy)
    logp = vmap(lambda theta, units: functional_call(module, theta, (units,)))(copies, padded)
    total = sum(objective(logp[k, :n], part) for k, (n, part) in enumerate(zip(rows, parts)))
    stacked = list(copies.values())
    return _flat(torch.autograd.grad(total, stacked, allow_unused=True), stacked, 1)


def _pad(x: Tensor, rows: int) -> Tensor:
    """x [n, ...] extended to [rows, ...] with copies of its first row."""
    return torch.cat([x, x[:1].expand(rows - x.shape[0], *x.shape[1:])]) if rows > x.shape[0] else x


def _flat(grads: tuple[Tensor | None, ...], params: list[Tensor], dims: int) -> Tensor:
    """Per-parameter gradients with `dims` leading batch dimensions as one [..., P] tensor, zeros where a
    parameter got none."""
    flat = [(g if g is not None else torch.zeros_like(p)).flatten(dims) for g, p in zip(grads, params)]
    return torch.cat(flat, dim=dims)
