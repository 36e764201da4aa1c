"""TextGen's GRU models (`envs.textgen_lm.TokenLM`, `textgen_task.ValueModel`) of several seeds as one
computation: each network's parameters stacked along a leading seed dimension under their module names
("embed.weight", "gru.weight_ih_l0", …, "head.bias"), and every operation of CPU `nn.GRU`, `nn.Embedding` and
`nn.Linear` done in the same order on the stack, so each seed's outputs and, under autograd, its gradients are
bit for bit its own module's (tests/test_stacked_lm.py). This is what lets a seed batch generate and take its
optimizer steps on TextGen together (rlbench.train.train_batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlbench.envs.textgen import EOS, SEP
from rlbench.envs.textgen_lm import Generation
from rlbench.policies import stacked_linear


def stack_parameters(modules: list[nn.Module]) -> dict[str, Tensor]:
    """Each named parameter of `modules` (one architecture) stacked along a new leading dimension (no gradient)."""
    with torch.no_grad():
        named = [dict(module.named_parameters()) for module in modules]
        return {name: torch.stack([own[name] for own in named]) for name in named[0]}


def _embed(params: dict[str, Tensor], tokens: Tensor) -> Tensor:
    """Every seed's embedding of its tokens [S, ...] → [S, ..., d] (one lookup in the stacked tables)."""
    table = params["embed.weight"]
    seeds, vocab = table.shape[:2]
    offsets = (torch.arange(seeds) * vocab).view(-1, *[1] * (tokens.dim() - 1))
    return nn.functional.embedding(tokens + offsets, table.reshape(seeds * vocab, -1))


def _linear(params: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    """nn.Linear `name` of every seed on its x [S, ..., in]: addmm for rows [S, B, in] (2-D input to the module),
    else a matmul of the flattened rows then the bias added, as nn.Linear computes a non-contiguous 3-D input;
    a single output unit seed by seed with nn.Linear's own function (a matrix-vector product, whose stacked
    form's gradients differ in the last bits)."""
    weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
    if weight.shape[1] == 1:
        return torch.stack([nn.functional.linear(x[k], weight[k], bias[k]) for k in range(len(x))])
    if x.dim() == 3:
        return stacked_linear(x, weight.transpose(1, 2), bias[:, None])
    rows = stacked_linear(x.reshape(x.shape[0], -1, x.shape[-1]), weight.transpose(1, 2), None)
    return rows.view(*x.shape[:-1], -1) + bias.view(bias.shape[0], *[1] * (x.dim() - 2), -1)


def gru(params: dict[str, Tensor], x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The 1-layer GRU of every seed on x [S, N, L, d] (batch first) from h [S, N, d] (None: zeros) → (outputs
    [S, N, L, d], last hidden state [S, N, d]), computed as ATen's CPU GRU does: the input projection of all L
    steps in one matrix product over time-major rows, then per step r = σ(W_hr h + b_hr + i_r), z likewise,
    n = tanh(i_n + r ⊙ (W_hn h + b_hn)), h' = (h − n) ⊙ z + n."""
    seeds, n, steps, d = x.shape
    rows = x.transpose(1, 2).reshape(seeds, steps * n, d)
    w_ih, w_hh = params["gru.weight_ih_l0"].transpose(1, 2), params["gru.weight_hh_l0"].transpose(1, 2)
    b_hh = params["gru.bias_hh_l0"][:, None]
    inputs = stacked_linear(rows, w_ih, None).view(seeds, steps, n, -1) + params["gru.bias_ih_l0"][:, None, None]
    h = torch.zeros(seeds, n, d) if h is None else h
    outputs = []
    for step_inputs in inputs.unbind(1):
        i_r, i_z, i_n = step_inputs.unsafe_chunk(3, 2)
        h_r, h_z, h_n = stacked_linear(h, w_hh, b_hh).unsafe_chunk(3, 2)
        reset = h_r.add_(i_r).sigmoid_()
        update = h_z.add_(i_z).sigmoid_()
        new = i_n.add(h_n.mul_(reset)).tanh_()
        h = (h - new).mul_(update).add_(new)
        outputs.append(h)
    return torch.stack(outputs, 1).transpose(1, 2), h


def features(params: dict[str, Tensor], prompts: Tensor, act: Tensor) -> Tensor:
    """GRUTrunk.features of every seed: prompts [S, N, P], act [S, N, T] → features of s_0 … s_{T−1},
    [S, N, T, d]."""
    sep = torch.full((*prompts.shape[:2], 1), SEP, dtype=torch.long)
    out, _ = gru(params, _embed(params, torch.cat([prompts, sep, act[..., :-1]], dim=-1)))
    return out[:, :, prompts.shape[-1] :]


def evaluate(params: dict[str, Tensor], units: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """TokenLM.evaluate of every seed on its own units ("prompt" [S, N, P], "act" [S, N, T]): (log π(a_t|s_t),
    entropy of π(·|s_t)), both [S, N, T]."""
    logp_all = torch.log_softmax(_linear(params, "head", features(params, units["prompt"], units["act"])), dim=-1)
    logp = logp_all.gather(-1, units["act"].unsqueeze(-1)).squeeze(-1)
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def value(params: dict[str, Tensor], units: dict[str, Tensor]) -> Tensor:
    """ValueModel.value of every seed on its own units → [S, N, T]."""
    return _linear(params, "head", features(params, units["prompt"], units["act"])).squeeze(-1)


@torch.no_grad()
def generate(
    models: list[nn.Module], prompts: Tensor, steps: int, generators: list[torch.Generator]
) -> list[Generation]:
    """TokenLM.generate of every seed k: models[k] samples `steps` tokens for each of its prompt rows prompts[k]
    ([S, N, P]) with generators[k]; one stacked GRU step per token serves all seeds."""
    params = stack_parameters(models)
    sep = torch.full((*prompts.shape[:2], 1), SEP, dtype=torch.long)
    out, h = gru(params, _embed(params, torch.cat([prompts, sep], dim=-1)))
    x = out[:, :, -1]
    done = torch.zeros(prompts.shape[:2], dtype=torch.bool)
    acts, masks, logps = [], [], []
    for t in range(steps):
        logp = torch.log_softmax(_linear(params, "head", x), dim=-1)
        probs = logp.exp()
        draws = [torch.multinomial(probs[k], 1, generator=g).squeeze(-1) for k, g in enumerate(generators)]
        token = torch.where(done, EOS, torch.stack(draws))
        acts.append(token)
        masks.append(~done)
        logps.append(logp)
        done = done | (token == EOS)
        if t + 1 < steps:
            out, h = gru(params, _embed(params, token)[:, :, None], h)
            x = out[:, :, 0]
    act, mask, logp_all = torch.stack(acts, 2), torch.stack(masks, 2).float(), torch.stack(logps, 2)
    return [Generation(act[k], mask[k], logp_all[k]) for k in range(len(models))]
