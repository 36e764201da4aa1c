"""MLP actors and critics for Gymnasium spaces (CleanRL's architecture: two tanh layers, orthogonal init)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

SUPPORTED_OBS = "flat Box or Discrete"
SUPPORTED_ACTIONS = "Discrete, MultiDiscrete or Box"


def obs_dim(space: gym.Space) -> int:
    """Input width of the network for an observation space (Discrete is one-hot encoded)."""
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise ValueError(f"unsupported observation space {space}; supported: {SUPPORTED_OBS}")


def encode_obs(space: gym.Space, obs: np.ndarray) -> Tensor:
    """A batch of raw observations [N, ...] as float32 network input [N, obs_dim]."""
    if isinstance(space, gym.spaces.Discrete):
        return nn.functional.one_hot(torch.as_tensor(obs, dtype=torch.long) - int(space.start), int(space.n)).float()
    return torch.as_tensor(np.asarray(obs, dtype=np.float32))


def _layer(n_in: int, n_out: int, std: float = math.sqrt(2)) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(n_in: int, n_out: int, hidden: int, out_std: float) -> nn.Sequential:
    """n_in → hidden → hidden → n_out with tanh, orthogonal init, output layer scaled by out_std."""
    return nn.Sequential(
        _layer(n_in, hidden), nn.Tanh(), _layer(hidden, hidden), nn.Tanh(), _layer(hidden, n_out, out_std)
    )


class MLPPolicy(nn.Module):
    """π(a|s): categorical heads for Discrete/MultiDiscrete actions, diagonal Gaussian for Box actions."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden: int) -> None:
        super().__init__()
        self.observation_space = observation_space
        if isinstance(action_space, gym.spaces.Discrete):
            self.heads = [int(action_space.n)]
        elif isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
            self.heads = [int(n) for n in action_space.nvec]
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.heads = []
        else:
            raise ValueError(f"unsupported action space {action_space}; supported: {SUPPORTED_ACTIONS}")
        n_out = sum(self.heads) if self.heads else int(action_space.shape[0])
        self.net = mlp(obs_dim(observation_space), n_out, hidden, out_std=0.01)
        self.log_std = None if self.heads else nn.Parameter(torch.zeros(n_out))

    def _split_logits(self, obs: Tensor) -> list[Tensor]:
        return [torch.log_softmax(x, dim=-1) for x in self.net(obs).split(self.heads, dim=-1)]

    @torch.no_grad()
    def act(self, obs: Tensor, generator: torch.Generator, deterministic: bool = False) -> Tensor:
        """Sample (or take the mode of) an action for each row of obs [N, d]; returns [N] or [N, k]."""
        if self.log_std is not None:
            mean = self.net(obs)
            if deterministic:
                return mean
            return mean + self.log_std.exp() * torch.randn(mean.shape, generator=generator)
        picks = []
        for logp in self._split_logits(obs):
            if deterministic:
                picks.append(logp.argmax(dim=-1))
            else:
                picks.append(torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1))
        return picks[0] if len(picks) == 1 else torch.stack(picks, dim=-1)

    def evaluate(self, units: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(log π(a|s), entropy) for units["obs"] [B, d] and units["act"]; both [B]."""
        return log_prob_entropy(self.net(units["obs"]), units["act"], self.heads, self.log_std)


def log_prob_entropy(out: Tensor, act: Tensor, heads: list[int], log_std: Tensor | None) -> tuple[Tensor, Tensor]:
    """(log π(a|s), entropy) from the network output `out` [..., B, n_out] and actions `act` [..., B(, k)]:
    categorical heads over the splits `heads` of `out`, or a diagonal Gaussian of mean `out` and `log_std`
    ([n_out], or [..., 1, n_out] with the leading dimensions of `out`); both results [..., B]."""
    if log_std is not None:
        log_std = log_std.expand_as(out)
        logp = -0.5 * (((act - out) / log_std.exp()) ** 2) - log_std - 0.5 * math.log(2 * math.pi)
        return logp.sum(-1), (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
    actions = act.unsqueeze(-1) if len(heads) == 1 else act
    logp = torch.zeros(out.shape[:-1])
    entropy = torch.zeros(out.shape[:-1])
    for i, part in enumerate(out.split(heads, dim=-1)):
        head = torch.log_softmax(part, dim=-1)
        logp = logp + head.gather(-1, actions[..., i : i + 1].long()).squeeze(-1)
        entropy = entropy - (head.exp() * head).sum(-1)
    return logp, entropy


class MLPCritic(nn.Module):
    """V(s): an MLP of the same shape as the actor, output layer std 1 (CleanRL)."""

    def __init__(self, observation_space: gym.Space, hidden: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim(observation_space), 1, hidden, out_std=1.0)

    def value(self, units: dict[str, Tensor]) -> Tensor:
        """V(s) for units["obs"] of shape [..., d]; returns [...]."""
        return self.net(units["obs"]).squeeze(-1)


class _StackedLinear(torch.autograd.Function):
    """baddbmm(bias, x, weight) (bmm without a bias) whose weight gradient is computed as gradᵀ·x (transposed
    back), the order in which autograd differentiates nn.Linear's weight and a matmul by a transposed weight, so
    each member's gradient equals its own module's bit for bit (bmm's own backward computes xᵀ·grad, which
    differs in the last bits for narrow inputs)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x if weight.requires_grad else None, weight if x.requires_grad else None)
        return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias, x, weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        grad_x = grad.bmm(weight.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_weight = grad.transpose(1, 2).bmm(x).transpose(1, 2) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(1, keepdim=True) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x[k] @ weight[k] + bias[k] for every member k, each row bit for bit what nn.Linear gives for 2-D input
    (addmm; without a bias: a matmul by the transposed weight) and, under autograd, each member's gradients: one
    baddbmm, or one addmm per member for a single output unit (baddbmm's result then depends on the number of
    members)."""
    if weight.shape[-1] == 1 and bias is not None:
        return torch.stack([torch.addmm(bias[k], x[k], weight[k]) for k in range(len(x))])
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _StackedLinear.apply(x, weight, bias)
    return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias, x, weight)


def stacked_forward(layers: list[tuple[Tensor, Tensor]], x: Tensor) -> Tensor:
    """The MLP (tanh between layers) of every member on its own rows: x [members, B, d], each layer's
    (weight [members, in, out], bias [members, 1, out])."""
    for i, (weight, bias) in enumerate(layers):
        x = stacked_linear(x, weight, bias)
        if i < len(layers) - 1:
            x = torch.tanh(x)
    return x


class StackedPolicies:
    """The MLP policies of a batch of seeds as one computation: each layer's parameters stacked along a leading
    member dimension, so one batched matrix product (baddbmm) serves every member, while each member samples
    from its own generator. Row k of the output equals `policies[members[k]].act` on row k of the input (the
    same operations per row; tests/test_seed_batch.py checks it bit for bit). Built once per collection: the
    policies must not change while it is in use."""

    def __init__(self, policies: list[MLPPolicy]) -> None:
        linear = [i for i, layer in enumerate(policies[0].net) if isinstance(layer, nn.Linear)]
        with torch.no_grad():
            self.layers = [
                (
                    torch.stack([p.net[i].weight for p in policies]).transpose(1, 2),
                    torch.stack([p.net[i].bias for p in policies])[:, None],
                )
                for i in linear
            ]
            self.log_std = None if policies[0].log_std is None else torch.stack([p.log_std for p in policies])
        self.heads = policies[0].heads
        self.selected: tuple[tuple[int, ...], list[tuple[Tensor, Tensor]], Tensor | None] | None = None

    def _select(self, members: tuple[int, ...]) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
        """The stacked parameters of `members` (cached until the members change)."""
        if self.selected is None or self.selected[0] != members:
            index = torch.as_tensor(members)
            layers = [(weight[index], bias[index]) for weight, bias in self.layers]
            self.selected = (members, layers, None if self.log_std is None else self.log_std[index])
        return self.selected[1], self.selected[2]

    @torch.no_grad()
    def act(
        self, obs: Tensor, members: tuple[int, ...], generators: list[torch.Generator], deterministic: bool = False
    ) -> Tensor:
        """Actions for obs [len(members), N, d]: row k by policy members[k], sampled with generators[k]."""
        layers, log_std = self._select(members)
        x = stacked_forward(layers, obs)
        if log_std is not None:
            if deterministic:
                return x
            std = log_std.exp()
            return torch.stack([x[k] + std[k] * torch.randn(x[k].shape, generator=g) for k, g in enumerate(generators)])
        picks = []
        for part in x.split(self.heads, dim=-1):
            logp = torch.log_softmax(part, dim=-1)
            if deterministic:
                picks.append(logp.argmax(dim=-1))
                continue
            probs = logp.exp()
            draws = [torch.multinomial(probs[k], 1, generator=g).squeeze(-1) for k, g in enumerate(generators)]
            picks.append(torch.stack(draws))
        return picks[0] if len(picks) == 1 else torch.stack(picks, dim=-1)
