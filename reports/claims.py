"""The five claims of DESIGN.md §1, each measured on the sweep with a 95% bootstrap interval and a verdict.

A claim is made of one or more *tests* (the parts the claim asserts) plus *context* rows (shown, not voted).
A test is supported when its interval excludes "no effect" in the claimed direction, contradicted when it
excludes it in the opposite direction, else inconclusive. A claim is supported when every test is,
contradicted when any test is, and otherwise inconclusive. Missing data make a test inconclusive, with the
reason. Intervals resample runs with replacement within each env (and group size), seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rlbench.reports import stats as S
from rlbench.reports.data import is_textgen

REPS = 2000

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"


def _iqm_batch(b: np.ndarray) -> np.ndarray:
    """IQM of each row of [reps, n] -> [reps]."""
    return np.asarray(S.iqm(b[..., None]))


def _mean_batch(b: np.ndarray) -> np.ndarray:
    return b.mean(axis=-1)


def _std_batch(b: np.ndarray) -> np.ndarray:
    return b.std(axis=-1, ddof=1)


STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"IQM": _iqm_batch, "mean": _mean_batch, "std": _std_batch}


def verdict(low: float, high: float, null: float, direction: int) -> str:
    """supported / contradicted / inconclusive for a claimed direction (+1: effect > null, −1: effect < null)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if (direction > 0 and low > null) or (direction < 0 and high < null):
        return SUPPORTED
    if (direction > 0 and high < null) or (direction < 0 and low > null):
        return CONTRADICTED
    return INCONCLUSIVE


def _resample(rng: np.random.Generator, strata: list[np.ndarray], reps: int) -> list[np.ndarray]:
    """Resample each stratum's values with replacement: -> one [reps, n_stratum] array per stratum."""
    return [s[rng.integers(0, s.size, size=(reps, s.size))] for s in strata]


def _apply(statistic: str, strata: list[np.ndarray]) -> np.ndarray:
    """The statistic of [..., n] samples per stratum: pooled over strata, except `std`, which is the mean of the
    within-stratum stds (pooling envs would measure how different the envs are, not the seeds)."""
    if statistic == "std":
        return np.mean([_std_batch(s) for s in strata], axis=0)
    return STATISTICS[statistic](np.concatenate(strata, axis=-1))


def two_group_effect(
    x: list[np.ndarray],
    y: list[np.ndarray],
    kind: str = "ratio",
    statistic: str = "IQM",
    reps: int = REPS,
    seed: int = 0,
) -> S.Interval:
    """stat(X) / stat(Y) (kind="ratio") or stat(X) − stat(Y) ("diff") with a stratified bootstrap interval.

    x, y: one array of per-run values per stratum (env); strata may differ in size. Runs are resampled
    within each stratum, X and Y independently. NaN bounds when either group has fewer than 2 runs. `std` is
    the mean over strata of the within-stratum std (strata with fewer than 2 runs are left out).
    """
    xs, ys = [np.asarray(a, float) for a in x if len(a)], [np.asarray(a, float) for a in y if len(a)]
    if statistic == "std":  # a std needs 2 values in every stratum
        xs, ys = [a for a in xs if a.size >= 2], [a for a in ys if a.size >= 2]
    nx, ny = sum(a.size for a in xs), sum(a.size for a in ys)
    if nx == 0 or ny == 0:
        return S.Interval(np.nan, np.nan, np.nan)

    def combine(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / b if kind == "ratio" else a - b

    point = float(combine(_apply(statistic, [a[None] for a in xs])[0], _apply(statistic, [a[None] for a in ys])[0]))
    if min(nx, ny) < 2 or (statistic == "std" and min(nx, ny) < 3):
        return S.Interval(point, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    dist = combine(_apply(statistic, _resample(rng, xs, reps)), _apply(statistic, _resample(rng, ys, reps)))
    if not np.isfinite(dist).all():
        return S.Interval(point, np.nan, np.nan)
    low, high = np.percentile(dist, [2.5, 97.5])
    return S.Interval(point, float(low), float(high))


def _slope(xc: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
    """Pooled within-env OLS slope: Σ xc·(y − ȳ_env) / Σ xc², y [..., n_env] per env."""
    num = sum((x * (y - y.mean(axis=-1, keepdims=True))).sum(axis=-1) for x, y in zip(xc, ys))
    den = sum((x**2).sum() for x in xc)
    return num / den


def doubling_factor(g: list[np.ndarray], values: list[np.ndarray], reps: int = REPS, seed: int = 0) -> S.Interval:
    """Factor by which a positive per-run value changes per doubling of G: 2^slope of log2(value) on log2(G).

    g, values: per env, the runs' group sizes and values. The slope is the within-env least-squares slope;
    the interval resamples runs within each (env, G) stratum. NaN bounds without 2 G values with 2 runs each.
    """
    envs = []
    for gs, vs in zip(g, values):
        gs, vs = np.asarray(gs, float), np.asarray(vs, float)
        keep = np.isfinite(gs) & np.isfinite(vs) & (vs > 0) & (gs > 0)
        gs, vs = gs[keep], vs[keep]
        if np.unique(gs).size >= 2:
            strata = [(float(k), np.log2(vs[gs == k])) for k in np.unique(gs)]
            envs.append(strata)
    if not envs:
        return S.Interval(np.nan, np.nan, np.nan)
    xc = []
    for strata in envs:
        x = np.concatenate([np.full(v.size, np.log2(k)) for k, v in strata])
        xc.append(x - x.mean())
    point = float(2 ** _slope(xc, [np.concatenate([v for _, v in s]) for s in envs]))
    if any(v.size < 2 for s in envs for _, v in s):
        return S.Interval(point, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    ys = [np.concatenate(_resample(rng, [v for _, v in s], reps), axis=1) for s in envs]
    low, high = np.percentile(2 ** _slope(xc, ys), [2.5, 97.5])
    return S.Interval(point, float(low), float(high))


# ----------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured effect of a claim."""

    metric: str
    comparison: str
    effect: str
    """What the number is, e.g. 'ratio of IQMs' or 'difference of IQMs'."""
    null: float
    direction: int
    """+1 if the claim predicts effect > null, −1 if < null."""
    interval: S.Interval = field(default_factory=lambda: S.Interval(np.nan, np.nan, np.nan))
    n_x: int = 0
    n_y: int = 0
    role: str = "test"
    note: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.interval.low, self.interval.high, self.null, self.direction)


@dataclass
class Claim:
    id: str
    statement: str
    measured_by: str
    rows: list[Row] = field(default_factory=list)
    note: str = ""

    @property
    def tests(self) -> list[Row]:
        return [r for r in self.rows if r.role == "test"]

    @property
    def verdict(self) -> str:
        verdicts = [r.verdict for r in self.tests]
        if not verdicts:
            return INCONCLUSIVE
        if CONTRADICTED in verdicts:
            return CONTRADICTED
        return SUPPORTED if all(v == SUPPORTED for v in verdicts) else INCONCLUSIVE

    @property
    def reason(self) -> str:
        """Why a test is inconclusive or missing, for the report."""
        notes = [
            f"{r.metric}: "
            + (
                r.note
                or f"the 95% interval [{r.interval.low:.3g}, {r.interval.high:.3g}] includes no effect ({r.null:g})"
            )
            for r in self.tests
            if r.verdict == INCONCLUSIVE
        ]
        return "; ".join(filter(None, [self.note, *notes]))


def _by_env(runs: pd.DataFrame, algos, column: str, envs) -> list[np.ndarray]:
    out = []
    for env in envs:
        v = runs[(runs.env == env) & runs.algo.isin(algos)][column].to_numpy(dtype=float) if column in runs else []
        v = np.asarray(v, float)
        out.append(v[np.isfinite(v)])
    return out


def compare(
    runs: pd.DataFrame,
    x_algos,
    y_algos,
    column: str,
    *,
    metric: str,
    kind: str,
    direction: int,
    statistic: str = "IQM",
    envs=None,
    role: str = "test",
    seed: int = 0,
    label: str | None = None,
) -> Row:
    """A two-group comparison row over the envs where both groups have finished runs."""
    x_algos, y_algos = list(x_algos), list(y_algos)
    if envs is None:
        envs = sorted(runs.env.unique()) if not runs.empty else []
    xs, ys = _by_env(runs, x_algos, column, envs), _by_env(runs, y_algos, column, envs)
    both = [i for i in range(len(envs)) if xs[i].size and ys[i].size]
    xs, ys = [xs[i] for i in both], [ys[i] for i in both]
    nx, ny = sum(a.size for a in xs), sum(a.size for a in ys)
    ci = two_group_effect(xs, ys, kind, statistic, seed=seed)
    null = 1.0 if kind == "ratio" else 0.0
    what = f"{'ratio' if kind == 'ratio' else 'difference'} of {statistic}s"
    name = label or f"{' + '.join(x_algos)} vs {' + '.join(y_algos)}"
    note = ""
    if nx == 0 or ny == 0:
        missing = [", ".join(a) for a, n in ((x_algos, nx), (y_algos, ny)) if n == 0]
        note = f"no finished runs with {column} for {' and '.join(missing)}"
    elif min(nx, ny) < 2:
        note = "needs at least 2 successful runs per group"
    elif not np.isfinite(ci.low):
        note = "interval undefined (zero or non-finite denominator)"
    return Row(metric, name, what, null, direction, ci, nx, ny, role, note)


def is_grpo(algo: str) -> bool:
    """A `grpo` matrix column (`grpo-g4`, …), not another group-advantage preset such as rloo or dr_grpo."""
    return algo.rsplit("-g", 1)[0] == "grpo"


def _group_rows(runs: pd.DataFrame, column: str, metric: str, direction: int, role: str, seed: int) -> Row:
    grp = (
        runs[runs.group_size.notna() & runs.algo.map(is_grpo).astype(bool)] if "group_size" in runs else runs.iloc[0:0]
    )
    envs = sorted(grp.env.unique())
    g = [grp[grp.env == e].group_size.to_numpy(float) for e in envs]
    v = [grp[grp.env == e][column].to_numpy(float) if column in grp else np.array([]) for e in envs]
    ci = doubling_factor(g, v, seed=seed)
    sizes = sorted({int(x) for x in grp.group_size}) if len(grp) else []
    note = ""
    if len(sizes) < 2:
        note = "needs GRPO runs at 2 or more group sizes"
    elif not np.isfinite(ci.low):
        note = "needs at least 2 successful runs per group size"
    return Row(
        metric,
        f"GRPO over G = {', '.join(map(str, sizes)) or '—'}",
        "factor per doubling of G",
        1.0,
        direction,
        ci,
        len(grp),
        0,
        role,
        note,
    )


def evaluate_claims(runs: pd.DataFrame, seed: int = 0) -> list[Claim]:
    """C1–C5 from per-run measurements (reports.tables.per_run). Pure: the same table gives the same claims."""
    if runs.empty:
        runs = pd.DataFrame(columns=["env", "algo", "seed", "group_size"])
    algos = list(dict.fromkeys(runs.algo))
    classic = runs[~runs.env.map(is_textgen)] if len(runs) else runs
    textgen = runs[runs.env.map(is_textgen)] if len(runs) else runs
    grpo = [a for a in algos if is_grpo(a) and not runs[(runs.algo == a) & runs.group_size.notna()].empty]
    others = [a for a in algos if a != "pg"]
    all_g = "grpo (all G) vs ppo"

    def vs(data: pd.DataFrame, x, y, column: str, metric: str, kind: str, direction: int, **extra) -> Row:
        return compare(data, x, y, column, metric=metric, kind=kind, direction=direction, seed=seed, **extra)

    def context(*args, **extra) -> Row:
        return vs(*args, role="context", **extra)

    c1 = Claim(
        "C1",
        'Raw ("absolute") rewards give high-variance gradient estimates.',
        "gradient noise scale B = Σ tr(Σ) / Σ |G|² over a run's updates, from McCandlish et al. (2018)'s unbiased "
        "two-batch-size estimates (K disjoint minibatches and their union), which unlike the relative variance "
        "does not depend on batch size: pg vs the other algorithms pooled; > 1 means pg's gradients are noisier "
        "per sample",
    )
    noise = ("grad_noise_scale", "gradient noise scale", "ratio", +1)
    c1.rows += [
        vs(runs, ["pg"], others, *noise, label="pg vs all others"),
        context(
            runs, ["pg"], others, "grad_cosine", "gradient cosine similarity", "diff", -1, label="pg vs all others"
        ),
        *(context(runs, ["pg"], [a], *noise) for a in others),
    ]

    c2 = Claim(
        "C2",
        "A learned critic baseline lowers that variance without biasing the gradient.",
        "gradient noise scale, critic vs pg on the same episodes-per-update collection (< 1 supports); relative "
        "variance, advantage std and returns as context",
        note="unbiasedness needs an MDP with a known gradient and is not measured by a sweep: "
        "tests/test_gradients.py checks it on a 2-step MDP with a closed-form gradient",
    )
    c2.rows += [
        vs(runs, ["critic"], ["pg"], "grad_noise_scale", "gradient noise scale", "ratio", -1),
        context(runs, ["critic"], ["pg"], "grad_rel_var", "gradient relative variance", "ratio", -1),
        context(runs, ["critic"], ["pg"], "adv_std", "advantage std", "ratio", -1),
        context(classic, ["critic"], ["pg"], "final_return", "final return", "diff", +1),
        context(classic, ["critic"], ["pg"], "auc", "area under the return curve", "diff", +1),
    ]

    # The clip's own effect is measured against the ablation without it when the sweep has one (same epochs and
    # minibatches); otherwise against `critic`, as DESIGN §1 lists (which also differs in its number of steps).
    base = "ppo_noclip" if "ppo_noclip" in algos else "critic"
    c3 = Claim(
        "C3",
        "PPO's clip keeps each update small and training stable.",
        f"approx KL(π_old‖π_new) per update (ratio < 1) and max drawdown of the evaluation return curve "
        f"(difference < 0), ppo vs {base}"
        + (" (the same PPO without the clip)" if base == "ppo_noclip" else " (add ppo_noclip to isolate the clip)"),
    )
    c3.rows += [
        vs(runs, ["ppo"], [base], "approx_kl", "approx KL per update", "ratio", -1),
        vs(classic, ["ppo"], [base], "drawdown", "max drawdown (fraction of range)", "diff", -1, statistic="mean"),
        context(classic, ["ppo"], [base], "collapsed", "collapse rate", "diff", -1, statistic="mean"),
        context(
            classic, ["ppo"], [base], "final_return", "across-seed std of final return", "ratio", -1, statistic="std"
        ),
        context(classic, ["ppo"], [base], "final_return", "final return", "diff", +1),
    ]
    if base != "critic":
        c3.rows += [
            context(runs, ["ppo"], ["critic"], "approx_kl", "approx KL per update", "ratio", -1),
            context(
                classic,
                ["ppo"],
                ["critic"],
                "drawdown",
                "max drawdown (fraction of range)",
                "diff",
                -1,
                statistic="mean",
            ),
        ]
    c3.rows.append(context(runs, ["ppo"], ["critic"], "clip_fraction", "clip fraction", "diff", +1))

    c4 = Claim(
        "C4",
        "A KL penalty to a frozen reference model limits reward hacking.",
        "final proxy − gold reward gap on TextGen, ppo_kl − ppo (< 0 supports); KL to reference as context",
    )
    if textgen.empty or "gap" not in textgen:
        c4.note = "no TextGen runs in this sweep (run with --envs rlbench/TextGen-v0)"
        c4.rows.append(Row("proxy − gold gap", "ppo_kl vs ppo", "difference of IQMs", 0.0, -1, note="no TextGen runs"))
    else:
        c4.rows += [
            vs(textgen, ["ppo_kl"], ["ppo"], "gap", "proxy − gold gap", "diff", -1),
            context(textgen, ["ppo_kl"], ["ppo"], "kl_to_ref", "KL to reference", "ratio", -1),
            context(textgen, ["ppo_kl"], ["ppo"], "gold", "gold reward", "diff", +1),
        ]
        if grpo:
            c4.rows.append(context(textgen, grpo, ["ppo"], "gap", "proxy − gold gap", "diff", -1, label=all_g))

    c5 = Claim(
        "C5",
        "GRPO drops the critic (less memory and compute per update) and gets its baseline from a "
        "group of G samples; larger G lowers variance but costs more samples.",
        "grpo (all G) vs ppo: update FLOPs per env step and parameters (ratios < 1); across G: gradient "
        "relative variance (factor per doubling < 1) and env steps per update (factor > 1)",
    )
    if not grpo:
        c5.note = "no GRPO runs in this sweep"
    c5.rows += [
        vs(runs, grpo, ["ppo"], "update_flops_per_env_step", "update FLOPs per env step", "ratio", -1, label=all_g),
        vs(runs, grpo, ["ppo"], "params_total", "parameters (policy + critic)", "ratio", -1, label=all_g),
        _group_rows(runs, "grad_rel_var", "gradient relative variance", -1, "test", seed),
        _group_rows(runs, "env_steps_per_update", "env steps per update", +1, "test", seed),
        context(runs, grpo, ["ppo"], "peak_rss_mb", "peak resident memory", "ratio", -1, label=all_g),
        context(runs, grpo, ["ppo"], "wall_time_s", "wall time", "ratio", -1, label=all_g),
        _group_rows(classic, "auc", "area under the return curve", -1, "context", seed),
    ]
    return [c1, c2, c3, c4, c5]


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """One row per measured effect, with the claim's overall verdict (deterministic order)."""
    rows = []
    for c in claims:
        for r in c.rows:
            rows.append(
                {
                    "claim": c.id,
                    "claim_verdict": c.verdict,
                    "role": r.role,
                    "metric": r.metric,
                    "comparison": r.comparison,
                    "effect": r.effect,
                    "point": r.interval.point,
                    "low": r.interval.low,
                    "high": r.interval.high,
                    "no_effect": r.null,
                    "claimed_direction": ">" if r.direction > 0 else "<",
                    "verdict": r.verdict,
                    "n_x": r.n_x,
                    "n_y": r.n_y,
                    "note": r.note,
                }
            )
    return pd.DataFrame(rows)
