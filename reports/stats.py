"""Aggregate statistics across seeds and tasks, after rliable (Agarwal et al. 2021).

A *score matrix* is shaped [n_runs, n_tasks] (seeds × environments); a 1-D array is one task's runs.
Every aggregate here also accepts a batch [..., n_runs, n_tasks] and returns [...], which is how the
stratified bootstrap evaluates all resamples at once. Intervals are percentile intervals of a stratified
bootstrap (runs resampled with replacement independently within each task), seeded with a numpy
Generator, and need at least 2 runs: with 1 run the bounds are NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import trim_mean

Statistic = Callable[[np.ndarray], np.ndarray | float]
"""Aggregate of scores [..., n_runs, n_tasks] -> [...] (a float for one matrix)."""

_MAX_BATCH_ELEMENTS = 1 << 22
"""Resamples are drawn in chunks of at most this many elements, to bound memory."""


class Interval(NamedTuple):
    """A point estimate with the bounds of its confidence interval (NaN bounds: fewer than 2 runs)."""

    point: float
    low: float
    high: float


class ProfileBand(NamedTuple):
    """A performance profile [n_taus] with its pointwise confidence band [n_taus] each."""

    point: np.ndarray
    low: np.ndarray
    high: np.ndarray


# ----------------------------------------------------------------------------------------------------------
# Input checks


def _check_finite(a: np.ndarray, name: str) -> None:
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); need at least one run and one task")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; drop or impute failed runs before aggregating")


def _as_batch(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Float array [..., n_runs, n_tasks]; a 1-D array [n_runs] becomes [n_runs, 1]."""
    a = np.asarray(scores, dtype=float)
    if a.ndim == 0:
        raise ValueError(f"{name} must be an array of runs, got a scalar")
    if a.ndim == 1:
        a = a[:, None]
    _check_finite(a, name)
    return a


def _as_matrix(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Float score matrix [n_runs, n_tasks]; a 1-D array [n_runs] becomes [n_runs, 1]."""
    a = _as_batch(scores, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a score matrix [n_runs, n_tasks], got shape {a.shape}")
    return a


def _check_bootstrap_args(reps: int, confidence: float) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


# ----------------------------------------------------------------------------------------------------------
# Point aggregates (rliable.metrics definitions)


def iqm(scores: ArrayLike) -> np.ndarray | float:
    """Interquartile mean over all runs × tasks: scipy.stats.trim_mean(·, 0.25) of the flattened scores.

    Cuts floor(0.25·N) of the N values from each end (no fractional weights), as rliable's aggregate_iqm.
    """
    a = _as_batch(scores)
    out = trim_mean(a.reshape(*a.shape[:-2], -1), 0.25, axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def mean(scores: ArrayLike) -> np.ndarray | float:
    """Mean over tasks of the per-task mean score, (1/M)·Σ_m mean_n x[n, m] (rliable's aggregate_mean)."""
    a = _as_batch(scores)
    out = a.mean(axis=(-2, -1))
    return float(out) if np.ndim(out) == 0 else out


def median(scores: ArrayLike) -> np.ndarray | float:
    """Median over tasks of the per-task mean score (rliable's aggregate_median; one task: its mean)."""
    a = _as_batch(scores)
    out = np.median(a.mean(axis=-2), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def optimality_gap(scores: ArrayLike, gamma: float = 1.0) -> np.ndarray | float:
    """Optimality gap γ − mean(min(x, γ)) over all runs × tasks (rliable; lower is better)."""
    a = _as_batch(scores)
    out = gamma - np.minimum(a, gamma).mean(axis=(-2, -1))
    return float(out) if np.ndim(out) == 0 else out


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + ½·P(X = Y) per batch element, averaged over tasks: x [..., n, M], y [..., m, M] -> [...]."""
    xs, ys = x[..., :, None, :], y[..., None, :, :]
    wins = (xs > ys).mean(axis=(-3, -2)) + 0.5 * (xs == ys).mean(axis=(-3, -2))
    return wins.mean(axis=-1)


def probability_of_improvement(x: ArrayLike, y: ArrayLike) -> float:
    """Average over tasks m of P(X_m > Y_m) + ½·P(X_m = Y_m) = U_m / (n·m) (Mann–Whitney U).

    x: [n, n_tasks], y: [m, n_tasks] (run counts may differ). 0.5 means no difference.
    """
    xa, ya = _as_matrix(x, "x"), _as_matrix(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must have the same number of tasks, got {xa.shape[1]} and {ya.shape[1]}")
    return float(_poi(xa, ya))


def _profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs × tasks with score > τ: scores [..., n, M], taus [T] -> [..., T]."""
    flat = scores.reshape(*scores.shape[:-2], -1)
    return (flat[..., None, :] > taus[:, None]).mean(axis=-1)


def _as_taus(taus: ArrayLike) -> np.ndarray:
    t = np.atleast_1d(np.asarray(taus, dtype=float))
    if t.ndim != 1:
        raise ValueError(f"taus must be 1-D, got shape {t.shape}")
    _check_finite(t, "taus")
    return t


def performance_profile(scores: ArrayLike, taus: ArrayLike) -> np.ndarray:
    """Run-score profile F(τ) = (1/(N·M)) Σ_{n,m} 1[x[n, m] > τ] for each τ: scores [n, M] -> [len(taus)].

    Pass normalized scores (see `normalize`) so that τ means the same on every task.
    """
    return _profile(_as_matrix(scores), _as_taus(taus))


def normalize(scores: ArrayLike, low: ArrayLike, high: ArrayLike) -> np.ndarray:
    """Per-task min–max normalization (x − low_m) / (high_m − low_m); low, high: scalars or [n_tasks].

    E.g. low = random-policy score, high = solved threshold, so 0 = random and 1 = solved.
    """
    a = _as_batch(scores)
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    for name, v in (("low", lo), ("high", hi)):
        if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != a.shape[-1]):
            raise ValueError(f"{name} must be a scalar or have one entry per task ({a.shape[-1]}), got {v.shape}")
        _check_finite(v, name)
    if np.any(hi == lo):
        raise ValueError("high equals low for some task; the normalization would divide by zero")
    out = (a - lo) / (hi - lo)
    return out[:, 0] if np.ndim(scores) == 1 else out


def auc(x: ArrayLike, y: ArrayLike) -> np.ndarray | float:
    """Area under a learning curve normalized by its x-range: ∫ y dx / (x_last − x_first), trapezoid rule.

    x: [T] strictly increasing (e.g. env steps); y: [..., T] (e.g. [n_seeds, T]) -> [...]; the result is
    in y's units (the curve's average height).
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.ndim != 1 or xa.shape[0] < 2:
        raise ValueError(f"x must be 1-D with at least 2 points, got shape {xa.shape}")
    if ya.ndim == 0 or ya.shape[-1] != xa.shape[0]:
        raise ValueError(f"y's last axis must match x ({xa.shape[0]} points), got shape {ya.shape}")
    _check_finite(xa, "x")
    _check_finite(ya, "y")
    if np.any(np.diff(xa) <= 0):
        raise ValueError("x must be strictly increasing")
    out = np.trapezoid(ya, xa, axis=-1) / (xa[-1] - xa[0])
    return float(out) if np.ndim(out) == 0 else out


# ----------------------------------------------------------------------------------------------------------
# Stratified bootstrap


def stratified_resample(rng: np.random.Generator, scores: np.ndarray, size: int) -> np.ndarray:
    """`size` stratified resamples of scores [n, M] -> [size, n, M]: column m only draws from column m."""
    n, m = scores.shape
    rows = rng.integers(0, n, size=(size, n, m))
    return scores[rows, np.arange(m)]


def _bootstrap(
    fn: Callable[..., np.ndarray],
    mats: Sequence[np.ndarray],
    reps: int,
    seed: int | np.random.Generator | None,
    elements_per_rep: int,
) -> np.ndarray:
    """Bootstrap distribution [reps, ...] of fn(*resamples), each matrix resampled independently."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_BATCH_ELEMENTS // max(1, elements_per_rep))
    parts = []
    for start in range(0, reps, chunk):
        size = min(chunk, reps - start)
        out = np.asarray(fn(*(stratified_resample(rng, a, size) for a in mats)), dtype=float)
        if out.shape[:1] != (size,):
            raise ValueError(
                f"statistic must map a batch [reps, n_runs, n_tasks] to [reps], got shape {out.shape}; "
                "use this module's aggregates or pass vectorized=False"
            )
        parts.append(out)
    return np.concatenate(parts)


def _percentiles(dist: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of a bootstrap distribution [reps, ...] -> ([...], [...])."""
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(dist, [alpha, 100.0 - alpha], axis=0)
    return low, high


def stratified_bootstrap_ci(
    scores: ArrayLike,
    statistic: Statistic = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    vectorized: bool = True,
) -> Interval:
    """Point statistic(scores) and percentile interval over `reps` stratified bootstrap resamples.

    scores: [n_runs, n_tasks]. `statistic` must map [reps, n, M] -> [reps] unless vectorized=False (then it
    is called once per resample). Deterministic for a given integer seed.
    """
    a = _as_matrix(scores)
    _check_bootstrap_args(reps, confidence)
    point = float(statistic(a))
    if a.shape[0] < 2:
        return Interval(point, float("nan"), float("nan"))
    fn = statistic if vectorized else (lambda b: np.array([statistic(s) for s in b]))
    dist = _bootstrap(fn, [a], int(reps), seed, a.size)
    if dist.ndim != 1:
        raise ValueError(f"statistic must return one number per resample, got shape {dist.shape[1:]}")
    low, high = _percentiles(dist, confidence)
    return Interval(point, float(low), float(high))


def probability_of_improvement_ci(
    x: ArrayLike,
    y: ArrayLike,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
) -> Interval:
    """P(X > Y) (see `probability_of_improvement`) with a percentile interval; x, y resampled independently.

    Each of x [n, M] and y [m, M] is resampled stratified by task, as rliable's StratifiedIndependentBootstrap.
    """
    point = probability_of_improvement(x, y)
    _check_bootstrap_args(reps, confidence)
    xa, ya = _as_matrix(x, "x"), _as_matrix(y, "y")
    if min(xa.shape[0], ya.shape[0]) < 2:
        return Interval(point, float("nan"), float("nan"))
    dist = _bootstrap(_poi, [xa, ya], int(reps), seed, xa.shape[0] * ya.shape[0] * xa.shape[1])
    low, high = _percentiles(dist, confidence)
    return Interval(point, float(low), float(high))


def performance_profile_ci(
    scores: ArrayLike,
    taus: ArrayLike,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
) -> ProfileBand:
    """Performance profile [len(taus)] with a pointwise percentile band from stratified bootstrap resamples."""
    a, t = _as_matrix(scores), _as_taus(taus)
    point = _profile(a, t)
    _check_bootstrap_args(reps, confidence)
    if a.shape[0] < 2:
        nan = np.full_like(point, np.nan)
        return ProfileBand(point, nan, nan.copy())
    dist = _bootstrap(lambda b: _profile(b, t), [a], int(reps), seed, a.size * t.size)
    low, high = _percentiles(dist, confidence)
    return ProfileBand(point, low, high)


def aggregate_intervals(
    score_dict: Mapping[str, ArrayLike],
    statistic: Statistic = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> dict[str, Interval]:
    """{algo: score matrix [n_runs, n_tasks]} -> {algo: (point, low, high)} of `statistic` (default IQM).

    Pass statistic=mean / median / optimality_gap for rliable's other aggregates. Every algorithm is
    bootstrapped with the same seed, so its interval does not depend on which others are in the dict.
    """
    return {
        name: stratified_bootstrap_ci(s, statistic, reps=reps, confidence=confidence, seed=seed)
        for name, s in score_dict.items()
    }


# ----------------------------------------------------------------------------------------------------------
# Two-column effects per env, pooled over envs, with bootstrap p-values and Holm's correction (the claims engine)

EFFECT_NULL = {"ratio": 1.0, "diff": 0.0, "poi": 0.5}
"""Effect kind → its value under "no effect"."""


def poi_1d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(A > B) + ½·P(A = B) of a [..., n] against b [..., m] -> [...]; ±inf compare as numbers (rank-based)."""
    x, y = a[..., :, None], b[..., None, :]
    return (x > y).mean(axis=(-2, -1)) + 0.5 * (x == y).mean(axis=(-2, -1))


def _location(statistic: str, a: np.ndarray) -> np.ndarray:
    """IQM / mean / median / std (ddof 1) of a [..., n] over its last axis -> [...]."""
    if statistic == "IQM":
        return trim_mean(a, 0.25, axis=-1)
    if statistic == "mean":
        return a.mean(axis=-1)
    if statistic == "median":
        return np.median(a, axis=-1)
    if statistic == "std":
        return a.std(axis=-1, ddof=1)
    raise ValueError(f"unknown statistic {statistic!r}; allowed: IQM, mean, median, std")


def effect(a: np.ndarray, b: np.ndarray, kind: str, statistic: str = "IQM") -> np.ndarray:
    """Effect of runs a [..., n] over runs b [..., m] -> [...]: `ratio` stat(a)/stat(b), `diff` stat(a) − stat(b),
    `poi` P(A > B) + ½·P(A = B) (rank-based: defined for infinite values)."""
    if kind == "poi":
        return poi_1d(a, b)
    sa, sb = _location(statistic, a), _location(statistic, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return sa / sb if kind == "ratio" else sa - sb


def pool(effects: np.ndarray, kind: str) -> np.ndarray:
    """Combined effect of per-env effects [..., E] -> [...]: geometric mean of ratios, arithmetic mean else."""
    if kind == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.exp(np.log(effects).mean(axis=-1))
    return effects.mean(axis=-1)


def env_bootstrap(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], kind: str, statistic: str, reps: int, seed: int | Sequence[int]
) -> np.ndarray:
    """Bootstrap distribution [reps, E] of the per-env effects: in every env, the runs of each side are
    resampled with replacement independently (an env-stratified, two-sample bootstrap)."""
    rng = np.random.default_rng(seed)
    cols = []
    for a, b in pairs:
        ra = a[rng.integers(0, a.size, size=(reps, a.size))]
        rb = b[rng.integers(0, b.size, size=(reps, b.size))]
        cols.append(effect(ra, rb, kind, statistic))
    return np.stack(cols, axis=-1)


def percentile_interval(dist: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a bootstrap distribution [reps]; NaN bounds if any resample is not finite."""
    if dist.size == 0 or not np.isfinite(dist).all():
        return (float("nan"), float("nan"))
    low, high = _percentiles(dist, confidence)
    return (float(low), float(high))


def bootstrap_p(dist: np.ndarray, null: float) -> float:
    """Two-sided bootstrap p-value of "effect = null": 2·min(#(d ≤ null) + 1, #(d ≥ null) + 1) / (reps + 1),
    capped at 1; NaN for an empty or NaN-holding distribution."""
    if dist.size == 0 or np.isnan(dist).any():
        return float("nan")
    low, high = (dist <= null).sum() + 1, (dist >= null).sum() + 1
    return float(min(1.0, 2.0 * min(low, high) / (dist.size + 1)))


def first_crossing(x: ArrayLike, y: ArrayLike, x0: float) -> float:
    """y along a trajectory of points (x[i], y[i]) where x first reaches x0, linearly interpolated between the
    two points around that crossing (y[0] if x[0] >= x0); NaN if x never reaches x0 or x0 is NaN.

    Gao et al.'s early-stopping comparison: the gold reward an unpenalised run had when its KL to the reference
    was what a penalised run ended at.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    reached = np.flatnonzero(x >= x0) if np.isfinite(x0) else np.array([], dtype=int)
    if reached.size == 0:
        return float("nan")
    i = int(reached[0])
    if i == 0:
        return float(y[0])
    w = (x0 - x[i - 1]) / (x[i] - x[i - 1])
    return float(y[i - 1] + w * (y[i] - y[i - 1]))


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values: sorted p_(1) ≤ … ≤ p_(m) become max_{j ≤ k} min(1, (m − j + 1)·p_(j)).

    NaN entries are not hypotheses of the family (m counts the others) and stay NaN.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled) if m else scaled
    return out
