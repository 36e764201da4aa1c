"""The networks and Adam state of several seeds stacked along a leading seed dimension, so that one backward
pass and one optimizer step serve them all while every seed keeps its own gradient clipping and its own Adam
moments (Adam and the clip's scaling act element by element, so stacking changes no value). The networks are
rlbench's MLP actor and critic or TextGen's GRU language model and value model (rlbench.stacked_lm)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlbench import stacked_lm
from rlbench.envs.textgen_lm import TokenLM
from rlbench.policies import MLPCritic, MLPPolicy, log_prob_entropy, stacked_forward
from rlbench.textgen_task import ValueModel


def stackable(policy: nn.Module, critic: nn.Module | None) -> bool:
    """Whether a run's networks can join a SeedStack (rlbench's MLP actor and critic, or TextGen's models)."""
    if isinstance(policy, MLPPolicy):
        return critic is None or isinstance(critic, MLPCritic)
    return isinstance(policy, TokenLM) and (critic is None or isinstance(critic, ValueModel))


class SeedStack:
    """Trainable stacked copies of each seed's policy (and critic) parameters, with each seed's Adam moments
    stacked beside them and stepped by Adam's own operations (`_adam`); `write_back` returns parameters and
    moments to every seed's own modules and optimizer.

    Built from the seeds' policies, critics (None without one) and torch Adam optimizers over policy then critic
    parameters (as rlbench.train.Trainer makes them), which must hold the same settings and step count.
    """

    def __init__(
        self, policies: list[nn.Module], critics: list[nn.Module] | None, optimizers: list[torch.optim.Adam]
    ) -> None:
        self.policies, self.critics, self.optimizers = policies, critics, optimizers
        self.owned = [list(p.parameters()) + (list(c.parameters()) if critics else []) for p, c in self._pairs()]
        self.n_policy = len(list(policies[0].parameters()))
        with torch.no_grad():
            self.params = [torch.stack(group).requires_grad_() for group in zip(*self.owned)]
        names = [name for name, _ in policies[0].named_parameters()]
        self.policy_params = dict(zip(names, self.params[: self.n_policy]))
        critic_names = [name for name, _ in critics[0].named_parameters()] if critics else []
        self.critic_params = dict(zip(critic_names, self.params[self.n_policy :]))
        self.language_model = isinstance(policies[0], TokenLM)
        """TextGen's models (rlbench.stacked_lm), else MLPs."""
        group = optimizers[0].param_groups[0]
        if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
            raise ValueError("a SeedStack steps plain Adam (no weight decay, amsgrad or maximize)")
        (self.beta1, self.beta2), self.eps = group["betas"], group["eps"]
        self.state: list[dict[str, Tensor]] = []
        for j in range(len(self.params)):
            states = [opt.state[own[j]] for opt, own in zip(optimizers, self.owned) if own[j] in opt.state]
            if states and (len(states) != len(optimizers) or len({float(s["step"]) for s in states}) != 1):
                raise ValueError("the seeds of a SeedStack must have taken the same number of optimizer steps")
            self.state.append(
                {
                    "step": states[0]["step"].clone(),
                    **{key: torch.stack([s[key] for s in states]) for key in ("exp_avg", "exp_avg_sq")},
                }
                if states
                else {}
            )

    def _pairs(self) -> list[tuple[nn.Module, nn.Module | None]]:
        return list(zip(self.policies, self.critics or [None] * len(self.policies)))

    def evaluate(self, units: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(log π(a|s), entropy) of every seed's policy on its own units: obs [S, B, d], act [S, B(, k)] (for
        TextGen: prompt [S, N, P], act [S, N, T])."""
        return stacked_evaluate(self.policies[0], self.policy_params, units)

    def value(self, units: dict[str, Tensor]) -> Tensor:
        """Every seed's V(s) on its own units["obs"] [S, B, d] → [S, B] (for TextGen: [S, N, T])."""
        return stacked_value(self.critics[0], self.critic_params, units)

    def step(self, losses: Tensor, max_grad_norm: float) -> tuple[Tensor, Tensor]:
        """Backward of every seed's loss (`losses` [S]), each seed's policy and critic gradients clipped to
        max_grad_norm on their own (as torch.nn.utils.clip_grad_norm_ clips one seed's), one Adam step at each
        seed's own learning rate. Returns each seed's pre-clip policy and critic gradient norms ([S] each; 0
        without a critic)."""
        for param in self.params:
            param.grad = None
        losses.sum().backward()
        parts = (self.params[: self.n_policy], self.params[self.n_policy :])
        norms = [_clip_per_seed(part, max_grad_norm, len(losses)) for part in parts]
        self._adam([opt.param_groups[0]["lr"] for opt in self.optimizers])
        return norms[0], norms[1]

    @torch.no_grad()
    def _adam(self, lrs: list[float]) -> None:
        """torch.optim.Adam's step (its single-tensor form, operation for operation) on every stacked parameter,
        with seed k's step size from lrs[k]."""
        for param, state in zip(self.params, self.state):
            grad = param.grad
            if grad is None:
                continue
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(param), torch.zeros_like(param)
            state["step"] += 1
            step = state["step"].item()
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            bias_correction1, bias_correction2 = 1 - self.beta1**step, 1 - self.beta2**step
            denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(self.eps)
            steps = [-(lr / bias_correction1) for lr in lrs]
            torch._foreach_addcdiv_(list(param.unbind()), list(exp_avg.unbind()), list(denom.unbind()), steps)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy every seed's parameters and Adam moments back to its own modules and optimizer."""
        for k, (own, opt) in enumerate(zip(self.owned, self.optimizers)):
            for stacked, state, param in zip(self.params, self.state, own):
                param.copy_(stacked[k])
                if state:
                    opt.state[param] = {
                        "step": state["step"].clone(),
                        "exp_avg": state["exp_avg"][k].clone(),
                        "exp_avg_sq": state["exp_avg_sq"][k].clone(),
                    }


def stacked_evaluate(policy: nn.Module, params: dict[str, Tensor], units: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(log π(a|s), entropy) of stacked policies of `policy`'s architecture — `params`: its named parameters,
    each with a leading stack dimension — each on its own slice of `units` (SeedStack.evaluate)."""
    if isinstance(policy, TokenLM):
        return stacked_lm.evaluate(params, units)
    out = stacked_forward(_layers([param for name, param in params.items() if name.startswith("net.")]), units["obs"])
    log_std = params.get("log_std")
    return log_prob_entropy(out, units["act"], policy.heads, None if log_std is None else log_std[:, None])


def stacked_value(critic: nn.Module, params: dict[str, Tensor], units: dict[str, Tensor]) -> Tensor:
    """V(s) of stacked critics of `critic`'s architecture — `params`: its named parameters, each with a leading
    stack dimension — each on its own slice of `units` (SeedStack.value)."""
    if isinstance(critic, ValueModel):
        return stacked_lm.value(params, units)
    return stacked_forward(_layers(list(params.values())), units["obs"]).squeeze(-1)


def _layers(params: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(weight as [seeds, in, out], bias as [seeds, 1, out]) of each linear layer of an MLP's `params`."""
    return [(w.transpose(1, 2), b[:, None]) for w, b in zip(params[0::2], params[1::2])]


@torch.no_grad()
def _clip_per_seed(params: list[Tensor], max_norm: float, seeds: int) -> Tensor:
    """Scale each seed's slice of the gradients of `params` by min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ the seed's
    total 2-norm over `params` (the per-parameter norms' norm, as clip_grad_norm_ computes it); returns ‖g‖ [S]."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(seeds)
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(seeds, -1), 2, dim=1) for g in grads], dim=1)
    total = torch.linalg.vector_norm(norms, 2, dim=1)
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
    return total
