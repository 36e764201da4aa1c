"""Exact expected gradients of every KL-to-reference term, by enumerating every sample (`rlbench kl-bias`).

A tabular policy over sequences of T tokens from a vocabulary of K (T = 1 is a categorical bandit) has K^T
possible samples, so the expected gradient of a term, E_{s~q}[∇ term(s)] with samples from q = π (on-policy,
the first epoch) or q = π_old (later epochs), is a finite sum. It is compared with the exact gradients of the
sequence-level reverse KL(π‖π_ref) (what the KL penalty is documented to be) and forward KL(π_ref‖π).

Placements, as in rlbench.train (same estimator function, rlbench.algos.losses.kl_estimate):
- `loss`: the term Σ_t w_t·k(log π_t, log π_ref,t), differentiated through log π; w_t = 1, or with the
  importance weight the detached π_t/π_old,t.
- `reward`: −k(log π_sample,t, log π_ref,t) is each token's reward; the gradient is the ratio surrogate's,
  Σ_t (π_t/π_sample,t)·∇log π_t·Σ_{t' ≥ t} k_t' (the return-to-go, γ = 1, no baseline), the penalty that RLHF
  PPO descends. Off-policy the reward was computed by π_old at collection time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rlbench.algos.losses import kl_estimate

ESTIMATORS = ("k1", "k2", "k3")
CASES = {"bandit": (1, 4), "2 tokens": (2, 3)}
"""Case → (tokens T, vocabulary K)."""
SEED = 0
"""Seeds the logits of π, π_ref and π_old."""
MATCH_TOL = 1e-6
"""Relative error under which an expected gradient is said to follow a KL's gradient (float64 sums)."""


@dataclass(frozen=True)
class Row:
    case: str
    estimator: str
    placement: str
    sampling: str
    """`on-policy` (q = π), `off-policy` (q = π_old), `off+weight` (q = π_old, detached weight π/π_old)."""
    norm: float
    """‖expected gradient‖ / ‖∇KL(π‖π_ref)‖."""
    cos_reverse: float
    err_reverse: float
    """‖g − ∇KL(π‖π_ref)‖ / ‖∇KL(π‖π_ref)‖."""
    cos_forward: float
    err_forward: float
    """‖g − ∇KL(π_ref‖π)‖ / ‖∇KL(π_ref‖π)‖."""
    err_on_policy: float
    """‖g − g_on‖ / ‖g_on‖, g_on the same term's on-policy expected gradient (NaN when g_on is zero)."""

    @property
    def follows(self) -> str:
        """`rev` or `fwd`: the KL whose gradient the expected gradient equals (within MATCH_TOL); `zero`; `neither`."""
        if self.norm < MATCH_TOL:
            return "zero"
        if self.err_reverse < MATCH_TOL:
            return "rev"
        if self.err_forward < MATCH_TOL:
            return "fwd"
        return "neither"


def samples(tokens: int, vocab: int) -> Tensor:
    """Every sequence, [vocab^tokens, tokens]."""
    return torch.tensor(list(itertools.product(range(vocab), repeat=tokens)), dtype=torch.long)


def token_logp(logits: list[Tensor], seqs: Tensor, vocab: int) -> Tensor:
    """log π(a_t | a_<t) of every token of every sequence, [S, T]; logits[t] is [vocab^t, vocab] (one row per
    prefix, a prefix read as a base-`vocab` number)."""
    out, prefix = [], torch.zeros(seqs.shape[0], dtype=torch.long)
    for t, table in enumerate(logits):
        logp = torch.log_softmax(table[prefix], dim=-1)
        out.append(logp.gather(1, seqs[:, t : t + 1]).squeeze(1))
        prefix = prefix * vocab + seqs[:, t]
    return torch.stack(out, dim=1)


def random_logits(tokens: int, vocab: int, generator: torch.Generator, scale: float) -> list[Tensor]:
    return [scale * torch.randn(vocab**t, vocab, generator=generator, dtype=torch.float64) for t in range(tokens)]


def _flat_grad(value: Tensor, params: list[Tensor]) -> Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, params, retain_graph=True)])


def expected_gradient(
    logits: list[Tensor],
    ref_logp: Tensor,
    sample_logp: Tensor,
    seqs: Tensor,
    vocab: int,
    estimator: str,
    placement: str,
    weighted: bool,
) -> Tensor:
    """E_{s~q}[∇ term(s)] exactly, where q(s) = exp(Σ_t sample_logp[s]) (detached) and `term` is the
    `placement` form of `estimator` (module docstring); weighted multiplies a loss term by the detached π/π_q."""
    logp = token_logp(logits, seqs, vocab)
    q = sample_logp.sum(1).exp()
    if placement == "loss":
        per_token = kl_estimate(logp, ref_logp, estimator)
        if weighted:
            per_token = torch.exp(logp - sample_logp).detach() * per_token
    else:
        penalty = kl_estimate(sample_logp, ref_logp, estimator)
        to_go = penalty.flip(1).cumsum(1).flip(1)
        per_token = torch.exp(logp - sample_logp) * to_go
    return _flat_grad((q[:, None] * per_token).sum(), logits)


def _compare(g: Tensor, target: Tensor) -> tuple[float, float]:
    cos = float(torch.dot(g, target) / (g.norm() * target.norm()).clamp(min=1e-300))
    return cos, float((g - target).norm() / target.norm())


def table(seed: int = SEED) -> list[Row]:
    """Every (case, estimator, placement, sampling) with its expected gradient compared to both KLs'."""
    rows = []
    for case, (tokens, vocab) in CASES.items():
        generator = torch.Generator().manual_seed(seed)
        logits = [x.requires_grad_() for x in random_logits(tokens, vocab, generator, 1.0)]
        ref_logits = random_logits(tokens, vocab, generator, 1.0)
        old_logits = [x.detach() + y for x, y in zip(logits, random_logits(tokens, vocab, generator, 0.5))]
        seqs = samples(tokens, vocab)
        logp = token_logp(logits, seqs, vocab)
        ref = token_logp(ref_logits, seqs, vocab)
        old = token_logp(old_logits, seqs, vocab)
        p, p_ref = logp.sum(1).exp(), ref.sum(1).exp()
        reverse = _flat_grad((p * (logp.sum(1) - ref.sum(1))).sum(), logits)
        forward = _flat_grad((p_ref * (ref.sum(1) - logp.sum(1))).sum(), logits)
        for estimator, placement in itertools.product(ESTIMATORS, ("loss", "reward")):
            samplings = [("on-policy", logp.detach(), False), ("off-policy", old, False)]
            if placement == "loss":
                samplings.append(("off+weight", old, True))
            on_policy = None
            for sampling, sample_logp, weighted in samplings:
                g = expected_gradient(logits, ref, sample_logp, seqs, vocab, estimator, placement, weighted)
                on_policy = g if on_policy is None else on_policy
                cos_r, err_r = _compare(g, reverse)
                cos_f, err_f = _compare(g, forward)
                norm = float(g.norm() / reverse.norm())
                scale = on_policy.norm()
                err_on = float((g - on_policy).norm() / scale) if scale > MATCH_TOL * reverse.norm() else math.nan
                rows.append(Row(case, estimator, placement, sampling, norm, cos_r, err_r, cos_f, err_f, err_on))
    return rows


LEGEND = (
    "How to read it: on-policy, k1 in the reward (RLHF PPO, ppo_kl) follows ∇KL(π‖π_ref) of the whole sequence; "
    "k2 in the loss follows it only for one token (per-token loss terms miss the KL of the tokens that follow); "
    "k3 in the loss (DeepSeekMath GRPO) follows the forward ∇KL(π_ref‖π) for one token; k1 in the loss has zero "
    "expected gradient. Later epochs sample from π_old: the detached weight π/π_old restores the on-policy "
    "gradient of a one-token term exactly, of a sequence only approximately (it reweights the last token, not "
    "the prefix)."
)
