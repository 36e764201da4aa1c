"""Per-update diagnostics: gradient noise, explained variance, update size, FLOPs and saved-activation bytes."""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import TypeVar

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from rlbench.algos.losses import k3

T = TypeVar("T")


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


def count_flops(fn: Callable[[], T]) -> tuple[T, int, float]:
    """(fn(), the FLOPs PyTorch's flop counter counts in it, the wall time of the counted call)."""
    start = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, int(counter.get_total_flops()), time.perf_counter() - start


class FlopMeter:
    """Exact FLOPs of repeated calls, by PyTorch's flop counter (matrix products and convolutions, forward
    and backward; elementwise ops are not counted), without running the slow counter on every call.

    A call is keyed by a site name and `shape` = (rows, *fixed): FLOPs are determined by the shapes of the
    tensors a code path sees, and matrix products over a batch of rows cost an affine function of the row
    count. The first call of each row count is counted fresh, until two row counts of a key fix a line and a
    third fresh count confirms it; after that the line gives the count (only where it yields an integer). A
    key whose third count misses the line is counted fresh for every new row count. Same rows, same count.
    """

    def __init__(self, predict: bool = True) -> None:
        """`predict` False counts every new row count fresh (a reference for tests)."""
        self.predict = predict
        self.counts: dict[tuple, dict[int, int]] = {}
        self.affine: dict[tuple, bool] = {}
        self.calls = 0
        """Calls measured."""
        self.fresh = 0
        """Calls counted with the flop counter."""
        self.count_s = 0.0
        """Wall time of the counted calls, counting included (an upper bound on the meter's overhead)."""
        self.counting = False
        """True during a fresh count: work a call skips because its result is already known (e.g. reference
        log-probabilities a collector computed) must run then, so that the count includes it."""

    def measure(self, site: str, shape: tuple, fn: Callable[[], T]) -> tuple[T, int]:
        """(fn(), its FLOPs) for a call at `site` whose tensor shapes are determined by `shape`."""
        flops = self.known(site, shape)
        if flops is not None:
            return fn(), flops
        self.counting = True
        try:
            out, flops, seconds = count_flops(fn)
        finally:
            self.counting = False
        self.record(site, shape, flops, seconds)
        return out, flops

    def known(self, site: str, shape: tuple) -> int | None:
        """The FLOPs of a call at `site` with `shape` if counted or predicted, else None (then `record` the
        fresh count); counts as a measured call."""
        rows, key = shape[0], (site, *shape[1:])
        self.calls += 1
        return self.counts.get(key, {}).get(rows, self._on_line(key, rows))

    def record(self, site: str, shape: tuple, flops: int, seconds: float) -> None:
        """A fresh count of a call that `known` did not know, which took `seconds` with the counter."""
        rows, key = shape[0], (site, *shape[1:])
        known = self.counts.setdefault(key, {})
        self.count_s += seconds
        self.fresh += 1
        if len(known) == 2 and key not in self.affine:
            self.affine[key] = self._line(known, rows) == flops
        known[rows] = flops

    def _on_line(self, key: tuple, rows: int) -> int | None:
        if not (self.predict and self.affine.get(key)):
            return None
        value = self._line(self.counts[key], rows)
        return int(value) if value.denominator == 1 else None

    @staticmethod
    def _line(known: dict[int, int], rows: int) -> Fraction:
        """The affine function through the first two counted (rows, FLOPs) points, at `rows`."""
        (r1, f1), (r2, f2) = list(known.items())[:2]
        return f1 + Fraction(f2 - f1, r2 - r1) * (rows - r1)


class SavedBytes:
    """Bytes autograd saves for backward inside the context: the distinct storages of saved tensors, the
    parameters' own excluded (the activations a step's graph holds from forward to backward)."""

    def __init__(self, params: list[Tensor]) -> None:
        self.exclude = {p.untyped_storage().data_ptr() for p in params}
        self.seen: set[int] = set()
        self.bytes = 0
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def _pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.exclude and storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self) -> SavedBytes:
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.__exit__(*exc)


def tensor_bytes(tensors: Iterable[object]) -> int:
    """Bytes of the tensors among `tensors` (numel × element size)."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))
