"""Per-run measurements and per-cell (env × algorithm) tables with seeded 95% bootstrap intervals.

Every function maps frames of a `Sweep` to a tidy DataFrame; the statistics come from rlbench.reports.stats.
Tables list every env × algorithm cell seen in the sweep; a cell with no finished run has n = 0 and blanks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rlbench import registry
from rlbench.algos import order_key
from rlbench.reports import stats as S
from rlbench.reports.data import Sweep, is_textgen, kl_siblings
from rlbench.spec import DONE, Status

CELL_EMPTY = "empty"
"""Label of a table cell (env × column) without a finished run (not a run status: see rlbench.spec.Status)."""
REPS = 2000
"""Bootstrap resamples for every interval in the report."""

BINS = 40
"""Learning curves are averaged in this many equal env-step bins per run before aggregating over seeds."""


# ----------------------------------------------------------------------------------------------------------
# Helpers


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def iqm_ci(values, seed: int) -> tuple[float, float, float, int]:
    """IQM of the finite values with its 95% bootstrap interval and n (NaNs when there is no value)."""
    v = _finite(values)
    if v.size == 0:
        return (np.nan, np.nan, np.nan, 0)
    point, low, high = S.stratified_bootstrap_ci(v, S.iqm, reps=REPS, seed=seed)
    return (point, low, high, int(v.size))


def drawdown(y, scale: float) -> float:
    """Largest drop from the running best of a curve, max_t (max_{s ≤ t} y_s − y_t) / scale, with `scale` the
    env's score range (the same for every run, so a flat curve that never learned scores 0, not "stable" by
    its own range); NaN without 2 finite points."""
    v = _finite(y)
    if v.size < 2:
        return np.nan
    return float((np.maximum.accumulate(v) - v).max() / scale)


def score_range(env: str, final_returns) -> tuple[float, float, str]:
    """(low, high, source) of an env's score range: its entry's in rlbench.registry, else the min and max of the
    sweep's final returns on it (high = low + 1 when they coincide or are missing)."""
    reference = registry.score_range(env)
    if reference is not None:
        return (*reference, "random policy / solved threshold")
    v = _finite(final_returns)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    return (lo, hi if hi > lo else lo + 1.0, "observed min / max")


def noise_scale(summary_value: float, m: pd.DataFrame) -> float:
    """A run's gradient noise scale Σ tr Σ / Σ |G|²: the summary's, or +inf when the run's Σ |G|² ≤ 0 (its
    true-gradient estimate is swamped by noise: infinitely noisy, ranked above every finite value)."""
    if np.isfinite(summary_value) or "train/grad_sq_norm" not in m:
        return summary_value
    g2 = _finite(m["train/grad_sq_norm"])
    return np.inf if g2.size and g2.sum() <= 0 else summary_value


def collapsed(final: float, curve) -> float:
    """1.0 if the final return is below half the run's best (DESIGN §3), else 0.0; NaN without data.

    For a best return ≤ 0 (e.g. Acrobot) "half the best" is taken on the curve's range: final − worst <
    ½ (best − worst).
    """
    v = _finite(curve)
    if not np.isfinite(final) or v.size == 0:
        return np.nan
    best, worst = float(v.max()), float(min(v.min(), final))
    if best > 0:
        return float(final < 0.5 * best)
    return float(final - worst < 0.5 * (best - worst))


def _tail_mean(df: pd.DataFrame, col: str, frac: float = 0.1) -> float:
    if col not in df:
        return np.nan
    v = df[col].to_numpy(dtype=float)
    v = v[-max(1, round(len(v) * frac)) :]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else np.nan


def _mean(df: pd.DataFrame, col: str) -> float:
    if col not in df:
        return np.nan
    v = _finite(df[col])
    return float(v.mean()) if v.size else np.nan


def _median(df: pd.DataFrame, col: str) -> float:
    """Median over updates: gradient-noise ratios are heavy-tailed (a near-zero mean gradient explodes them)."""
    if col not in df:
        return np.nan
    v = _finite(df[col])
    return float(np.median(v)) if v.size else np.nan


def _num(row, name: str) -> float:
    """A summary field as float; NaN when absent or stored as null (JSON has no NaN)."""
    value = getattr(row, name, None)
    return np.nan if value is None else float(value)


def _cells(sweep: Sweep) -> list[tuple[str, str]]:
    """Every env × algorithm pair of the sweep in report order."""
    return [(e, a) for e in sweep.envs for a in sweep.algos]


def round_sig(df: pd.DataFrame, digits: int = 6) -> pd.DataFrame:
    """Floats rounded to `digits` significant digits, so tables are stable and readable."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda x: float(f"{x:.{digits}g}") if np.isfinite(x) else np.nan)
    return out


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Deterministic CSV: fixed row order as given, rounded floats, '\\n' line ends, NaN as empty."""
    round_sig(df).to_csv(path, index=False, lineterminator="\n", float_format="%.6g", na_rep="")


# ----------------------------------------------------------------------------------------------------------
# Per-run measurements


def fit_rl_form(d, gain) -> tuple[float, float]:
    """Least-squares fit of Gao et al.'s RL form gain(d) = d·(α − β·log d); points with d ≤ 0 are dropped.

    d: [N] sqrt(KL to reference); gain: [N] gold reward minus the reference's. Returns (α, β), NaN if < 2 points.
    """
    d, g = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    keep = np.isfinite(d) & np.isfinite(g) & (d > 0)
    d, g = d[keep], g[keep]
    if d.size < 2:
        return (np.nan, np.nan)
    design = np.stack([d, -d * np.log(d)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, g, rcond=None)
    return (float(alpha), float(beta))


def per_run(sweep: Sweep) -> pd.DataFrame:
    """One row per finished run with every per-run quantity the report aggregates."""
    rows = []
    metrics = {k: g for k, g in sweep.metrics.groupby(["env", "algo", "seed"], sort=False)}
    evals = {k: g for k, g in sweep.evals.groupby(["env", "algo", "seed"], sort=False)}
    for r in sweep.done.itertuples():
        key = (r.env, r.algo, r.seed)
        m = metrics.get(key, pd.DataFrame()).sort_values("update") if key in metrics else pd.DataFrame()
        e = evals.get(key, pd.DataFrame())
        e = e.sort_values("env_steps").drop_duplicates("env_steps") if not e.empty else e
        eval_curve = e["eval/return_mean"].to_numpy(dtype=float) if not e.empty else np.array([])
        fin = np.isfinite(eval_curve)
        auc = S.auc(e["env_steps"].to_numpy(float)[fin], eval_curve[fin]) if fin.sum() >= 2 else np.nan
        final = _num(r, "final_return")
        updates = _num(r, "updates")
        env_steps = _num(r, "env_steps")
        flops = _num(r, "flops_per_update")
        exact_flops = _num(r, "flops_per_env_step")
        row = {
            "env": r.env,
            "algo": r.algo,
            "seed": int(r.seed),
            "status": r.status,
            "group_size": r.group_size if r.advantage == "group" else np.nan,
            "final_return": final,
            "auc": auc,
            "_curve": eval_curve,
            "collapsed": collapsed(final, eval_curve),
            "diverged": float(r.status == Status.DIVERGED),
            "grad_cosine": _mean(m, "train/grad_cosine"),
            "grad_rel_var": _median(m, "train/grad_rel_var"),
            "grad_noise_scale": noise_scale(_num(r, "grad_noise_scale"), m),
            "adv_std": _mean(m, "train/adv_std"),
            "approx_kl": _mean(m, "train/approx_kl"),
            "clip_fraction": _mean(m, "train/clip_fraction"),
            "entropy": _mean(m, "train/entropy"),
            "kl_ref": _mean(m, "train/kl_ref"),
            "explained_variance": _mean(m, "train/explained_variance"),
            "env_steps": env_steps,
            "updates": updates,
            "env_steps_per_update": env_steps / updates if updates else np.nan,
            "wall_time_s": _num(r, "wall_time_s"),
            "rollout_time_s": _num(r, "rollout_time_s"),
            "update_time_s": _num(r, "update_time_s"),
            "env_steps_per_s": _num(r, "env_steps_per_s"),
            "flops_per_update": flops,
            "update_flops_per_env_step": flops * updates / env_steps if env_steps else np.nan,
            "flops_per_env_step": exact_flops,
            "flops_per_env_step_note": "",
            "update_memory_bytes": _num(r, "update_memory_bytes"),
            "params_policy": _num(r, "params_policy"),
            "params_critic": _num(r, "params_critic"),
            "peak_rss_mb": _num(r, "peak_rss_mb"),
        }
        row["params_total"] = row["params_policy"] + np.nan_to_num(row["params_critic"])
        if not np.isfinite(exact_flops):
            row["flops_per_env_step"] = row["update_flops_per_env_step"]
            row["flops_per_env_step_note"] = "extrapolated from the first update (no flops_per_env_step in summary)"
        if is_textgen(r.env):
            gold0 = m["textgen/gold_reward"].iloc[0] if "textgen/gold_reward" in m and len(m) else np.nan
            row.update(
                proxy=_tail_mean(m, "textgen/proxy_reward"),
                gold=_tail_mean(m, "textgen/gold_reward"),
                gold_gain=_tail_mean(m, "textgen/gold_reward") - gold0,
                gap=_tail_mean(m, "textgen/gap"),
                kl_to_ref=_tail_mean(m, "textgen/kl_ref_seq")
                if "textgen/kl_ref_seq" in m
                else _tail_mean(m, "train/kl_ref"),
            )
            if not e.empty and {"eval/gold_mean", "eval/proxy_mean"} <= set(e.columns):
                row["gold"] = float(e["eval/gold_mean"].iloc[-1])
                row["proxy"] = float(e["eval/proxy_mean"].iloc[-1])
                row["gap"] = row["proxy"] - row["gold"]
            if not e.empty and "eval/kl_ref_seq" in e:
                row["kl_final"] = float(e["eval/kl_ref_seq"].iloc[-1])
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["env", "algo", "seed"])
    out = pd.DataFrame(rows)
    if "kl_final" in out:
        out["early_stop_gold"] = early_stop_gold(sweep, out)
    for env, idx in out.groupby("env").groups.items():
        lo, hi, _ = score_range(env, out.loc[idx, "final_return"])
        out.loc[idx, "drawdown"] = [drawdown(c, hi - lo) for c in out.loc[idx, "_curve"]]
    return out.drop(columns="_curve")


def early_stop_gold(sweep: Sweep, runs: pd.DataFrame) -> list[float]:
    """Per run of `runs` with a KL penalty (β > 0): the gold reward its β = 0 sibling column's run of the same
    seed had when its KL to the reference first reached this run's final KL, interpolated between evaluations
    (reports.stats.first_crossing); NaN for other runs, or when the sibling never got that far."""
    siblings = kl_siblings(sweep.configs)
    evals = {k: g.sort_values("env_steps") for k, g in sweep.evals.groupby(["env", "algo", "seed"], sort=False)}
    out = []
    for r in runs.itertuples():
        sibling = siblings.get((r.env, r.algo))
        e = evals.get((r.env, sibling, r.seed)) if sibling else None
        if e is None or "eval/kl_ref_seq" not in e:
            out.append(np.nan)
            continue
        out.append(S.first_crossing(e["eval/kl_ref_seq"], e["eval/gold_mean"], r.kl_final))
    return out


# ----------------------------------------------------------------------------------------------------------
# Cell tables


def cell_table(sweep: Sweep, runs: pd.DataFrame, columns: dict[str, str], seed: int) -> pd.DataFrame:
    """env × algo: n, n_runs (directories), and for each column IQM [low, high] over seeds as <name>, _low, _high."""
    rows = []
    for env, algo in _cells(sweep):
        sel = runs[(runs["env"] == env) & (runs["algo"] == algo)] if not runs.empty else runs
        total = int(((sweep.runs["env"] == env) & (sweep.runs["algo"] == algo)).sum())
        row = {"env": env, "algo": algo, "n": len(sel), "n_runs": total}
        for col, name in columns.items():
            point, low, high, _ = iqm_ci(sel.get(col, []), seed)
            row |= {name: point, f"{name}_low": low, f"{name}_high": high}
        rows.append(row)
    return pd.DataFrame(rows)


def final_table(sweep: Sweep, runs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """IQM of final evaluation return and of the area under the evaluation curve, with mean and std."""
    t = cell_table(sweep, runs, {"final_return": "final_return_iqm", "auc": "auc_iqm"}, seed)
    stats = runs.groupby(["env", "algo"])["final_return"].agg(["mean", "std"]) if not runs.empty else None
    t["final_return_mean"] = [
        stats["mean"].get((e, a), np.nan) if stats is not None else np.nan for e, a in zip(t.env, t.algo)
    ]
    t["final_return_std"] = [
        stats["std"].get((e, a), np.nan) if stats is not None else np.nan for e, a in zip(t.env, t.algo)
    ]
    t["cell"] = np.where(t["n"] == 0, CELL_EMPTY, np.where(t["n"] < t["n_runs"], "partial", "complete"))
    return t


def variance_table(sweep: Sweep, runs: pd.DataFrame, seed: int) -> pd.DataFrame:
    t = cell_table(
        sweep,
        runs,
        {
            "grad_rel_var": "grad_rel_var_iqm",
            "grad_noise_scale": "grad_noise_scale_iqm",
            "grad_cosine": "grad_cosine_iqm",
            "adv_std": "adv_std_iqm",
        },
        seed,
    )
    std = runs.groupby(["env", "algo"])["final_return"].std() if not runs.empty else pd.Series(dtype=float)
    t["final_return_seed_std"] = [std.get((e, a), np.nan) for e, a in zip(t.env, t.algo)]
    noise = [_cell_values(runs, e, a, "grad_noise_scale") for e, a in zip(t.env, t.algo)]
    t["grad_noise_scale_median"] = [float(np.median(v)) if v.size else np.nan for v in noise]
    t["grad_noise_scale_n_inf"] = [int(np.isinf(v).sum()) for v in noise]
    return t


def _cell_values(runs: pd.DataFrame, env: str, algo: str, col: str) -> np.ndarray:
    """A cell's non-NaN per-run values of `col` (±inf kept)."""
    if runs.empty or col not in runs:
        return np.array([])
    v = runs[(runs.env == env) & (runs.algo == algo)][col].to_numpy(dtype=float)
    return v[~np.isnan(v)]


def stability_table(sweep: Sweep, runs: pd.DataFrame, seed: int) -> pd.DataFrame:
    t = cell_table(
        sweep,
        runs,
        {
            "approx_kl": "approx_kl_iqm",
            "clip_fraction": "clip_fraction_iqm",
            "entropy": "entropy_iqm",
            "kl_ref": "kl_ref_iqm",
            "explained_variance": "explained_variance_iqm",
            "drawdown": "drawdown_iqm",
        },
        seed,
    )
    for col, name in (("collapsed", "collapse_rate"), ("diverged", "divergence_rate")):
        rate = runs.groupby(["env", "algo"])[col].mean() if not runs.empty else pd.Series(dtype=float)
        t[name] = [rate.get((e, a), np.nan) for e, a in zip(t.env, t.algo)]
    return t


def compute_table(sweep: Sweep, runs: pd.DataFrame) -> pd.DataFrame:
    """openrlbenchmark-style runtime table: mean over finished seeds per env × algorithm."""
    cols = [
        "env_steps_per_s",
        "wall_time_s",
        "rollout_time_s",
        "update_time_s",
        "flops_per_update",
        "flops_per_env_step",
        "update_flops_per_env_step",
        "params_policy",
        "params_critic",
        "params_total",
        "peak_rss_mb",
        "env_steps_per_update",
        "updates",
    ]
    rows = []
    for env, algo in _cells(sweep):
        sel = runs[(runs["env"] == env) & (runs["algo"] == algo)] if not runs.empty else runs
        row = {"env": env, "algo": algo, "n": len(sel)}
        for c in cols:
            v = _finite(sel[c]) if c in sel else np.array([])
            row[c] = float(v.mean()) if v.size else np.nan
        wall = _finite(sel["wall_time_s"]) if "wall_time_s" in sel else np.array([])
        row["wall_time_s_std"] = float(wall.std(ddof=1)) if wall.size > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def group_table(sweep: Sweep, runs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The GRPO group-size sweep (runs with the group advantage), one row per env × G, with PPO as reference."""
    if runs.empty or runs["group_size"].isna().all():
        return pd.DataFrame(columns=["env", "algo", "group_size", "n"])
    rows = []
    sel_algos = [
        a
        for a in sweep.algos
        if a == "ppo" or (not runs[runs.algo == a].empty and runs[runs.algo == a].group_size.notna().all())
    ]
    for env in sweep.envs:
        for algo in sel_algos:
            sel = runs[(runs.env == env) & (runs.algo == algo)]
            if sel.empty:
                continue
            row = {"env": env, "algo": algo, "group_size": float(sel.group_size.iloc[0]), "n": len(sel)}
            for col in ("final_return", "grad_rel_var", "grad_cosine"):
                p, lo, hi, _ = iqm_ci(sel[col], seed)
                row |= {f"{col}_iqm": p, f"{col}_low": lo, f"{col}_high": hi}
            for col in (
                "env_steps_per_update",
                "wall_time_s",
                "update_time_s",
                "updates",
                "update_flops_per_env_step",
                "peak_rss_mb",
                "params_total",
            ):
                row[col] = float(_finite(sel[col]).mean()) if _finite(sel[col]).size else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def failed_table(sweep: Sweep) -> pd.DataFrame:
    """Runs that ran and are not ok: diverged, env_nan or failed, with the reason."""
    bad = sweep.runs[sweep.runs["status"].isin((Status.DIVERGED, Status.ENV_NAN, Status.FAILED))]
    return bad[["env", "algo", "seed", "status", "reason"]].reset_index(drop=True)


def missing_table(sweep: Sweep) -> pd.DataFrame:
    """Planned runs that did not finish training: failed, started and never ended, or never started, with the
    reason when it is known."""
    missing = sweep.runs[~sweep.runs["status"].isin(DONE)]
    return missing[["env", "algo", "seed", "status", "reason"]].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# Curves


def eval_curves(sweep: Sweep, seed: int, column: str = "eval/return_mean") -> pd.DataFrame:
    """Per env × algo: IQM over seeds of each evaluation checkpoint, with its 95% interval.

    Runs evaluate before training and at the same fractions of their budget (checkpoint k of eval_points), so
    the checkpoint-k evaluations of all seeds belong together; env_steps is their median. Columns as in `curves`.
    """
    cols = ["env", "algo", "env_steps", "iqm", "low", "high", "n"]
    if sweep.evals.empty or column not in sweep.evals:
        return pd.DataFrame(columns=cols)
    rows = []
    for env in sweep.envs:
        for algo in sweep.algos:
            d = sweep.evals[(sweep.evals.env == env) & (sweep.evals.algo == algo)].sort_values(["seed", "env_steps"])
            if d.empty:
                continue
            for _, g in d.groupby("checkpoint"):
                p, lo, hi, n = iqm_ci(g[column], seed)
                if n:
                    rows.append(
                        {
                            "env": env,
                            "algo": algo,
                            "env_steps": float(g.env_steps.median()),
                            "iqm": p,
                            "low": lo,
                            "high": hi,
                            "n": n,
                        }
                    )
    return pd.DataFrame(rows, columns=cols)


def curves(sweep: Sweep, column: str, seed: int, bins: int = BINS, frame: str = "metrics") -> pd.DataFrame:
    """Per env × algo: IQM over seeds of `column` averaged in equal env-step bins, with its 95% interval.

    Returns env, algo, env_steps (bin centre), iqm, low, high, n (seeds with a value in the bin).
    """
    src = sweep.metrics if frame == "metrics" else sweep.evals
    cols = ["env", "algo", "env_steps", "iqm", "low", "high", "n"]
    if src.empty or column not in src:
        return pd.DataFrame(columns=cols)
    rows = []
    for env in sweep.envs:
        data = src[(src.env == env) & src[column].notna()]
        if data.empty:
            continue
        hi = float(data.groupby(["algo", "seed"])["env_steps"].max().median())
        edges = np.linspace(0.0, hi, bins + 1)
        centres = 0.5 * (edges[1:] + edges[:-1])
        for algo in sweep.algos:
            d = data[data.algo == algo]
            if d.empty:
                continue
            per_seed = []
            for _, g in d.groupby("seed"):
                idx = np.clip(np.searchsorted(edges, g["env_steps"].to_numpy(float), side="right") - 1, 0, bins - 1)
                inside = g["env_steps"].to_numpy(float) <= hi * 1.0001
                sums = np.bincount(idx[inside], weights=g[column].to_numpy(float)[inside], minlength=bins)
                counts = np.bincount(idx[inside], minlength=bins)
                with np.errstate(invalid="ignore", divide="ignore"):
                    per_seed.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
            mat = np.array(per_seed)
            for b in range(bins):
                p, lo, hi_, n = iqm_ci(mat[:, b], seed)
                if n:
                    rows.append(
                        {"env": env, "algo": algo, "env_steps": centres[b], "iqm": p, "low": lo, "high": hi_, "n": n}
                    )
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------------------------------------
# Aggregates across envs


def normalized_scores(sweep: Sweep, runs: pd.DataFrame) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """{algo: normalized final-return matrix [k, n_envs]} over the non-TextGen envs every algorithm ran on.

    k = the algorithm's smallest seed count over those envs (its first k seeds by number are kept). Also
    returns the normalization used per env (low, high, source).
    """
    envs = [e for e in sweep.envs if not is_textgen(e)]
    norm_rows, scores = [], {}
    if runs.empty or not envs:
        return scores, pd.DataFrame(columns=["env", "low", "high", "source"])
    for env in envs:
        lo, hi, src = score_range(env, runs[runs.env == env]["final_return"])
        norm_rows.append({"env": env, "low": lo, "high": hi, "source": src})
    norm = pd.DataFrame(norm_rows)
    for algo in sweep.algos:
        cols = []
        for env, lo, hi in zip(norm.env, norm.low, norm.high):
            v = runs[(runs.env == env) & (runs.algo == algo)].sort_values("seed")["final_return"]
            cols.append((_finite(v) - lo) / (hi - lo))
        k = min(len(c) for c in cols)
        if k >= 1:
            scores[algo] = np.stack([c[:k] for c in cols], axis=1)
    return scores, norm


AGGREGATES = {"IQM": S.iqm, "Median": S.median, "Mean": S.mean, "Optimality gap": S.optimality_gap}


def aggregate_table(scores: dict[str, np.ndarray], seed: int) -> pd.DataFrame:
    rows = []
    for name, fn in AGGREGATES.items():
        for algo, ci in S.aggregate_intervals(scores, fn, reps=REPS, seed=seed).items():
            rows.append(
                {
                    "metric": name,
                    "algo": algo,
                    "n": scores[algo].shape[0],
                    "tasks": scores[algo].shape[1],
                    "point": ci.point,
                    "low": ci.low,
                    "high": ci.high,
                }
            )
    return pd.DataFrame(rows, columns=["metric", "algo", "n", "tasks", "point", "low", "high"])


def improvement_pairs(algos) -> list[tuple[str, str]]:
    """The story's comparisons: critic>pg, ppo>critic, ppo_kl>ppo, every other algorithm > ppo."""
    present = set(algos)
    pairs = [(x, y) for x, y in (("critic", "pg"), ("ppo", "critic"), ("ppo_kl", "ppo")) if {x, y} <= present]
    if "ppo" in present:
        pairs += [(a, "ppo") for a in sorted(present, key=order_key) if a not in ("pg", "critic", "ppo", "ppo_kl")]
    return pairs


def improvement_table(scores: dict[str, np.ndarray], seed: int) -> pd.DataFrame:
    rows = []
    for x, y in improvement_pairs(scores):
        ci = S.probability_of_improvement_ci(scores[x], scores[y], reps=REPS, seed=seed)
        rows.append(
            {
                "x": x,
                "y": y,
                "p_x_better": ci.point,
                "low": ci.low,
                "high": ci.high,
                "n_x": scores[x].shape[0],
                "n_y": scores[y].shape[0],
            }
        )
    return pd.DataFrame(rows, columns=["x", "y", "p_x_better", "low", "high", "n_x", "n_y"])


def profile_table(scores: dict[str, np.ndarray], seed: int, points: int = 41) -> pd.DataFrame:
    if not scores:
        return pd.DataFrame(columns=["algo", "tau", "fraction", "low", "high"])
    top = max(1.0, max(float(s.max()) for s in scores.values()))
    taus = np.linspace(0.0, top, points)
    rows = []
    for algo, s in scores.items():
        band = S.performance_profile_ci(s, taus, reps=REPS, seed=seed)
        rows += [
            {"algo": algo, "tau": t, "fraction": p, "low": lo, "high": hi}
            for t, p, lo, hi in zip(taus, band.point, band.low, band.high)
        ]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# Reward hacking (TextGen)


def hacking_points(sweep: Sweep) -> pd.DataFrame:
    """Per update of TextGen runs: env, algo, seed, env_steps, proxy, gold, d = sqrt(KL to ref), gold gain."""
    cols = ["env", "algo", "seed", "env_steps", "proxy", "gold", "d", "gold_gain"]
    m = sweep.metrics
    if m.empty or "textgen/gold_reward" not in m:
        return pd.DataFrame(columns=cols)
    m = m[m.env.map(is_textgen)].sort_values(["env", "algo", "seed", "update"])
    if "textgen/sqrt_kl" in m:
        d = m["textgen/sqrt_kl"]
    elif "textgen/kl_ref_seq" in m:
        d = np.sqrt(m["textgen/kl_ref_seq"].clip(lower=0))
    else:
        d = np.sqrt(m["train/kl_ref"].clip(lower=0))
    out = pd.DataFrame(
        {
            "env": m.env,
            "algo": m.algo,
            "seed": m.seed,
            "env_steps": m.env_steps,
            "proxy": m.get("textgen/proxy_reward", np.nan),
            "gold": m["textgen/gold_reward"],
            "d": d,
        }
    )
    out["gold_gain"] = out["gold"] - out.groupby(["env", "algo", "seed"])["gold"].transform("first")
    return out.reset_index(drop=True)


def hacking_table(sweep: Sweep, runs: pd.DataFrame, points: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per TextGen env × algo: final proxy, gold, gap, KL (IQM over seeds) and the RL-form fit (α, β)."""
    cols = [
        "env",
        "algo",
        "n",
        "proxy_iqm",
        "gold_iqm",
        "gap_iqm",
        "gap_low",
        "gap_high",
        "kl_to_ref_iqm",
        "fit_alpha",
        "fit_beta",
        "d_peak",
    ]
    rows = []
    for env in [e for e in sweep.envs if is_textgen(e)]:
        for algo in sweep.algos:
            sel = runs[(runs.env == env) & (runs.algo == algo)]
            if sel.empty or "gold" not in sel:
                continue
            pts = points[(points.env == env) & (points.algo == algo)]
            alpha, beta = fit_rl_form(pts.d, pts.gold_gain)
            gap = iqm_ci(sel["gap"], seed)
            rows.append(
                {
                    "env": env,
                    "algo": algo,
                    "n": len(sel),
                    "proxy_iqm": iqm_ci(sel["proxy"], seed)[0],
                    "gold_iqm": iqm_ci(sel["gold"], seed)[0],
                    "gap_iqm": gap[0],
                    "gap_low": gap[1],
                    "gap_high": gap[2],
                    "kl_to_ref_iqm": iqm_ci(sel["kl_to_ref"], seed)[0],
                    "fit_alpha": alpha,
                    "fit_beta": beta,
                    # R(d) = d(α − β log d) peaks where α − β(log d + 1) = 0.
                    "d_peak": float(np.exp(alpha / beta - 1)) if np.isfinite(beta) and beta > 0 else np.nan,
                }
            )
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------------------------------------
# KL frontier (TextGen, the β axis)

FIT_REPS = 2_000
"""Bootstrap resamples (of seeds) for the intervals of the Gao et al. fit's α and β."""


def kl_families(configs: dict[tuple[str, str], dict]) -> dict[tuple[str, str], tuple[str, float]]:
    """(env, column) → (family, β) for every column of a KL family: an unpenalised (β = 0) column that some
    penalised column has as its sibling (reports.data.kl_siblings), and those penalised columns. The family is
    the β = 0 column's name without `-b0` (`ppo_kl` for `ppo_kl-b0`, `ppo` for ppo_kl's sibling `ppo`)."""
    out = {}
    for (env, col), sibling in kl_siblings(configs).items():
        family = sibling.removesuffix("-b0")
        out[env, sibling] = (family, 0.0)
        out[env, col] = (family, float(configs[env, col]["kl_coef"]))
    return out


def kl_points(sweep: Sweep) -> pd.DataFrame:
    """Every evaluation of TextGen runs: env, algo, seed, env_steps, kl (to the reference, per answer), gold,
    gold_gain (gold − the reference's gold on the same prompts) and d = √kl."""
    cols = ["env", "algo", "seed", "env_steps", "kl", "gold", "gold_gain", "d"]
    e = sweep.evals
    if e.empty or "eval/kl_ref_seq" not in e:
        return pd.DataFrame(columns=cols)
    e = e[e.env.map(is_textgen) & e["eval/kl_ref_seq"].notna()].sort_values(["env", "algo", "seed", "env_steps"])
    out = pd.DataFrame(
        {
            "env": e.env,
            "algo": e.algo,
            "seed": e.seed,
            "env_steps": e.env_steps,
            "kl": e["eval/kl_ref_seq"],
            "gold": e["eval/gold_mean"],
            "gold_gain": e["eval/gold_mean"] - e["eval/ref_gold_mean"],
        }
    )
    out["d"] = np.sqrt(out.kl.clip(lower=0))
    return out.reset_index(drop=True)


def fit_interval(
    points: pd.DataFrame, seed: int, reps: int = FIT_REPS
) -> tuple[float, float, float, float, float, float]:
    """Gao et al.'s RL-form fit (fit_rl_form) of gold_gain against d over `points` (pooled over seeds), with 95%
    percentile intervals from refitting on seeds resampled with replacement: (α, α_low, α_high, β, β_low, β_high)."""
    alpha, beta = fit_rl_form(points.d, points.gold_gain)
    by_seed = [g for _, g in points.groupby("seed")]
    if len(by_seed) < 2 or not np.isfinite(alpha):
        return (alpha, np.nan, np.nan, beta, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    fits = np.array(
        [
            fit_rl_form(*(np.concatenate(x) for x in zip(*((by_seed[i].d, by_seed[i].gold_gain) for i in pick))))
            for pick in rng.integers(len(by_seed), size=(reps, len(by_seed)))
        ]
    )
    (a_low, b_low), (a_high, b_high) = np.nanpercentile(fits, [2.5, 97.5], axis=0)
    return (alpha, a_low, a_high, beta, b_low, b_high)


def kl_frontier(sweep: Sweep, runs: pd.DataFrame, points: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per TextGen env × column of a KL family (kl_families), ordered by family and β: n, the final KL to the
    reference and final gold (IQM [95% CI] over seeds), the gold of the family's β = 0 run at each run's final KL
    (early_stop_gold, IQM), and the RL-form fit of the column's evaluations with its intervals."""
    cols = ["env", "family", "algo", "beta", "n", "kl", "kl_low", "kl_high", "gold", "gold_low", "gold_high"]
    cols += ["early_stop_gold", "fit_alpha", "fit_alpha_low", "fit_alpha_high", "fit_beta", "fit_beta_low"]
    cols += ["fit_beta_high"]
    rows = []
    families = kl_families(sweep.configs)
    for (env, algo), (family, beta) in sorted(families.items(), key=lambda kv: (kv[0][0], kv[1])):
        sel = runs[(runs.env == env) & (runs.algo == algo)] if not runs.empty else runs
        if not is_textgen(env) or sel.empty or "kl_final" not in sel:
            continue
        kl, gold = iqm_ci(sel.kl_final, seed), iqm_ci(sel.gold, seed)
        early = iqm_ci(sel.early_stop_gold, seed)[0] if beta > 0 else np.nan
        fit = fit_interval(points[(points.env == env) & (points.algo == algo)], seed)
        rows.append(dict(zip(cols, (env, family, algo, beta, len(sel), *kl[:3], *gold[:3], early, *fit))))
    return pd.DataFrame(rows, columns=cols)
