"""Per-update diagnostics: gradient noise, explained variance, update size."""

from __future__ import annotations

import math
import resource

from torch import Tensor

from rlbench.algos.losses import k3


def gradient_noise(grads: Tensor) -> tuple[float, float]:
    """Noise of K gradient estimates g_k ([K, P]) of the same objective from disjoint minibatches.

    Returns (mean pairwise cosine similarity (Ilyas et al. 2020), relative variance E‖g_k − ḡ‖² / ‖ḡ‖²);
    both NaN when every gradient is zero (e.g. all advantages 0), where noise is undefined.
    """
    k = grads.shape[0]
    if not grads.any():
        return math.nan, math.nan
    unit = grads / grads.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = unit @ unit.T
    mean_cos = (cos.sum() - cos.diagonal().sum()) / (k * (k - 1))
    mean = grads.mean(dim=0)
    rel_var = ((grads - mean) ** 2).sum(dim=1).mean() / (mean @ mean).clamp(min=1e-24)
    return float(mean_cos), float(rel_var)


def noise_scale_parts(grads: Tensor, small: float, big: float) -> tuple[float, float]:
    """Unbiased estimates of the per-sample gradient noise tr(Σ) and the true squared gradient norm |G|² from
    gradients at two batch sizes (McCandlish et al. 2018, App. A): K minibatch gradients g_k of `small` samples
    each and their mean ḡ of `big` samples. |G|² ≈ (big·‖ḡ‖² − small·E‖g_k‖²)/(big − small),
    tr(Σ) ≈ (E‖g_k‖² − ‖ḡ‖²)/(1/small − 1/big). The simple noise scale is Σ tr(Σ) / Σ |G|² over many updates
    (each estimate alone is noisy and |G|² can come out negative)."""
    mean = grads.mean(dim=0)
    small_sq, big_sq = float((grads**2).sum(dim=1).mean()), float(mean @ mean)
    g2 = (big * big_sq - small * small_sq) / (big - small)
    trace = (small_sq - big_sq) / (1.0 / small - 1.0 / big)
    return trace, g2


def explained_variance(values: Tensor, targets: Tensor) -> float:
    """1 − Var(R̂ − V) / Var(R̂) (SB3's train/explained_variance); NaN when the targets are constant."""
    var = targets.var()
    return float("nan") if var == 0 else float(1.0 - (targets - values).var() / var)


def approx_kl(logp_new: Tensor, logp_old: Tensor) -> float:
    """KL(π_old‖π_new) from samples of π_old, k3 form: E[(r − 1) − log r], r = π_new/π_old (Schulman 2020)."""
    return float(k3(logp_old, logp_new).mean())


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
