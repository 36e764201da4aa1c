"""Report figures. Plotting only draws: every number comes precomputed from reports.tables / reports.claims.

Each function takes tidy frames and a {algo: colour} palette (the same for every figure of a report), draws
one figure and saves it as PNG and SVG; it returns the file stem. A panel without data says so in words.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import ticker as mticker
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

STYLE = {
    "svg.hashsalt": "rlbench",
    "svg.fonttype": "none",
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "legend.frameon": False,
}
PANEL_W, PANEL_H = 4.2, 3.1


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.15, rc=STYLE)


PNG_METADATA = {"Software": None}
SVG_METADATA = {"Date": None, "Creator": None}
"""Metadata that would change between renders or machines (dates, software versions), left out of the files."""


def save(fig: plt.Figure, folder: Path, stem: str) -> str:
    """Write folder/stem.png and .svg, byte-identical for the same figure on every render; close the figure."""
    with plt.rc_context({"svg.hashsalt": STYLE["svg.hashsalt"]}):
        fig.savefig(folder / f"{stem}.png", metadata=PNG_METADATA)
        fig.savefig(folder / f"{stem}.svg", metadata=SVG_METADATA)
    plt.close(fig)
    return stem


def _legend(fig: plt.Figure, algos, colours: dict[str, str], extra: list | None = None, title="algorithm"):
    handles = [Line2D([], [], color=colours[a], lw=2.5, label=a) for a in algos] + (extra or [])
    if handles:
        longest = max(len(h.get_label()) for h in handles)
        max_cols = max(1, int(fig.get_figwidth() / (0.75 + 0.085 * longest)))
        rows = -(-len(handles) // max_cols)
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=-(-len(handles) // rows),
            title=title,
            fontsize="medium",
            title_fontsize="medium",
        )


def _no_data(ax: plt.Axes, message: str) -> None:
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize="medium",
        color="0.35",
        bbox={"boxstyle": "round", "fc": "0.95", "ec": "0.7"},
    )


def _no_data_figure(folder: Path, stem: str, message: str) -> str:
    """A figure that is only a message, wide enough for it (a figure with nothing to draw in this sweep)."""
    fig, ax = plt.subplots(figsize=(8, 2.0), layout="constrained")
    _no_data(ax, message)
    return save(fig, folder, stem)


def _short_steps(ax: plt.Axes) -> None:
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3), useMathText=True)


def _band(ax, df: pd.DataFrame, algos, colours, log: bool = False) -> list[str]:
    drawn = []
    for a in algos:
        d = df[df.algo == a].sort_values("env_steps")
        if d.empty:
            continue
        ax.plot(d.env_steps, d.iqm, color=colours[a], lw=1.8, label=a)
        ax.fill_between(d.env_steps, d.low, d.high, color=colours[a], alpha=0.18, lw=0)
        drawn.append(a)
    if log and drawn:
        ax.set_yscale("log")
    _short_steps(ax)
    return drawn


def _si(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def _figure(rows: int, cols: int, w: float = PANEL_W, h: float = PANEL_H):
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows + 1.0), layout="constrained", squeeze=False)
    return fig, axes


# ----------------------------------------------------------------------------------------------------------
# 1. Learning curves


def learning_curves(
    curves: pd.DataFrame, envs, groups: dict[str, list[str]], colours, folder: Path, missing: dict | None = None
) -> str:
    """Evaluation return vs env steps: one row per env, one panel per algorithm family (`groups`: panel title →
    columns), so no panel holds more than a few bands; IQM over seeds with a 95% bootstrap band."""
    envs = list(envs)
    groups = groups or {"": []}
    fig, axes = _figure(max(1, len(envs)), len(groups), w=4.3, h=3.0)
    for row, env in zip(axes, envs):
        d = curves[curves.env == env]
        for ax, (title, algos) in zip(row, groups.items()):
            drawn = _band(ax, d, algos, colours) if not d.empty else []
            if not drawn:
                _no_data(ax, f"{env}\n{title}:\nno finished runs")
                continue
            ax.legend(fontsize="small", loc="best", handlelength=1.5)
            lost = [a for a in (missing or {}).get(env, []) if a in algos]
            note = "\n" + textwrap.fill("no finished runs: " + ", ".join(lost), 45) if lost else ""
            ax.set_title(f"{title}{note}", fontsize="small")
            ax.set(xlabel="env steps", ylabel=f"{env}\nevaluation return" if ax is row[0] else None)
    if not envs:
        _no_data(axes[0, 0], "no runs")
    fig.suptitle("Evaluation return vs env steps (held-out seeds; IQM over seeds, 95% bootstrap band)")
    return save(fig, folder, "learning_curves")


# ----------------------------------------------------------------------------------------------------------
# 2. Variance


def variance(
    env: str, cos: pd.DataFrame, relvar: pd.DataFrame, runs: pd.DataFrame, algos, colours, folder: Path, stem: str
) -> str:
    fig, axes = _figure(1, 3)
    used = set()
    for ax, df, ylabel, log, title in (
        (axes[0, 0], cos, "cosine similarity (unitless)", False, "gradient cosine between minibatches"),
        (axes[0, 1], relvar, "relative variance (unitless, log)", True, "gradient relative variance"),
    ):
        d = df[df.env == env]
        if d.empty:
            _no_data(ax, "no gradient-noise metrics")
            continue
        used |= set(_band(ax, d, algos, colours, log=log))
        ax.set(xlabel="env steps", ylabel=ylabel, title=title)
    ax = axes[0, 2]
    r = runs[(runs.env == env) & runs.final_return.notna()] if not runs.empty else runs
    if r.empty:
        _no_data(ax, "no finished runs")
    else:
        order = [a for a in algos if a in set(r.algo)]
        used |= set(order)
        common = dict(data=r, x="algo", y="final_return", order=order, hue="algo", palette=colours, ax=ax, legend=False)
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert` to bxp
            warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
            sns.boxplot(**common, showfliers=False, boxprops={"alpha": 0.35}, width=0.6)
        _strip(ax, r, order, colours)
        ax.set(xlabel="", ylabel="final evaluation return", title="final return across seeds")
        ax.tick_params(axis="x", rotation=45)
    _legend(fig, [a for a in algos if a in used], colours)
    fig.suptitle(f"{env}: gradient noise (IQM over seeds, 95% band) and across-seed spread")
    return save(fig, folder, stem)


def _strip(ax: plt.Axes, runs: pd.DataFrame, order: list[str], colours: dict[str, str], width: float = 0.15) -> None:
    """One dot per run at its category's position, jittered from a fixed seed so re-renders match."""
    rng = np.random.default_rng(0)
    for i, algo in enumerate(order):
        y = runs.loc[runs.algo == algo, "final_return"].to_numpy(float)
        x = i + rng.uniform(-width, width, size=y.size)
        ax.scatter(x, y, s=25, color=colours[algo], edgecolors="0.2", linewidths=0.6, zorder=3)


# ----------------------------------------------------------------------------------------------------------
# 3. Stability


def _bars(ax, df: pd.DataFrame, value: str, low: str | None, high: str | None, algos, colours, ylabel, title):
    d = df.set_index("algo").reindex([a for a in algos if a in set(df.algo)])
    d = d[d[value].notna()]
    if d.empty:
        _no_data(ax, f"no data for {title}")
        return []
    x = np.arange(len(d))
    ax.bar(x, d[value], color=[colours[a] for a in d.index], alpha=0.85)
    if low and high:
        err = np.vstack([d[value] - d[low], d[high] - d[value]])
        ok = np.isfinite(err).all(axis=0)
        ax.errorbar(x[ok], d[value][ok], yerr=err[:, ok], fmt="none", ecolor="0.15", capsize=3, lw=1.2)
    ax.set_xticks(x, d.index, rotation=45, ha="right")
    ax.set(ylabel=ylabel, title=title)
    top = np.nanmax(d[[c for c in (value, high) if c]].to_numpy(float))
    ax.set_ylim(0, 1.0 if top <= 0 else None)
    if top <= 0:
        ax.text(0.5, 0.5, "0 for every algorithm", transform=ax.transAxes, ha="center", color="0.35")
    return list(d.index)


def stability(
    env: str, curves: dict[str, pd.DataFrame], table: pd.DataFrame, algos, colours, folder: Path, stem: str
) -> str:
    """approx KL, clip fraction, entropy, KL to reference over training; drawdown and collapse rate per algo."""
    fig, axes = _figure(2, 3)
    used = set()
    specs = (
        ("train/approx_kl", "size of each update", "approx KL per update (nats, log)", True),
        ("train/clip_fraction", "share of ratios outside the clip range", "clip fraction", False),
        ("train/entropy", "policy entropy", "entropy (nats)", False),
        ("train/kl_ref", "distance from the initial policy", "KL to reference (nats, log)", True),
    )
    for ax, (col, title, ylabel, log) in zip(axes.flat, specs):
        d = curves.get(col, pd.DataFrame())
        d = d[d.env == env] if not d.empty else d
        if log and not d.empty:
            d = d[d.iqm > 0]
        if d.empty:
            _no_data(ax, f"no {title} logged ({col})")
            continue
        used |= set(_band(ax, d, algos, colours, log=log))
        ax.set(xlabel="env steps", ylabel=ylabel, title=title)
    t = table[(table.env == env) & (table.n > 0)]
    used |= set(
        _bars(
            axes[1, 1],
            t,
            "drawdown_iqm",
            "drawdown_iqm_low",
            "drawdown_iqm_high",
            algos,
            colours,
            "max drawdown (fraction of range)",
            "drawdown of eval return (IQM, 95% CI)",
        )
    )
    ax = axes[1, 2]
    used |= set(
        _bars(
            ax,
            t,
            "collapse_rate",
            None,
            None,
            algos,
            colours,
            "collapse rate (share of seeds)",
            "collapse: final < ½ best",
        )
    )
    _legend(fig, [a for a in algos if a in used], colours)
    fig.suptitle(f"{env}: stability (curves: IQM over seeds with 95% band)")
    return save(fig, folder, stem)


# ----------------------------------------------------------------------------------------------------------
# 4. Compute cost


def _log_si(ax: plt.Axes) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: _si(v)))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())


def compute(env: str, cost: pd.DataFrame, final: pd.DataFrame, algos, colours, folder: Path, stem: str) -> str:
    """Wall-time split, FLOPs per env step (what C5 compares) beside FLOPs per update, parameters, and final
    return against wall time with the Pareto front; each panel explains its own shading."""
    c = cost[(cost.env == env) & (cost.n > 0)].set_index("algo")
    order = [a for a in algos if a in c.index]
    fig, axes = _figure(1, 5, w=3.7, h=3.6)
    if not order:
        for ax in axes.flat:
            _no_data(ax, "no finished runs")
        return save(fig, folder, stem)
    c = c.loc[order]
    x = np.arange(len(order))
    cols = [colours[a] for a in order]
    ax = axes[0, 0]
    other = (c.wall_time_s - c.rollout_time_s - c.update_time_s).clip(lower=0)
    ax.bar(x, c.rollout_time_s, color=cols, alpha=0.9)
    ax.bar(x, c.update_time_s, bottom=c.rollout_time_s, color=cols, alpha=0.45, hatch="//", edgecolor="0.3")
    ax.bar(x, other, bottom=c.rollout_time_s + c.update_time_s, color="0.85", edgecolor="0.5")
    ax.set_xticks(x, order, rotation=45, ha="right")
    ax.set(ylabel="wall time per run (s)", title="wall time per run")
    ax.legend(
        handles=[
            Patch(fc="0.45", label="rollout"),
            Patch(fc="0.8", hatch="//", ec="0.3", label="update"),
            Patch(fc="0.85", ec="0.5", label="other: evaluation,\nprobes, logging"),
        ],
        fontsize="small",
        loc="upper left",
    )
    for ax, col, title in (
        (axes[0, 1], "flops_per_env_step", "FLOPs per env step (whole run)"),
        (axes[0, 2], "flops_per_update", "FLOPs per update (context)"),
    ):
        values = c[col] if col in c else pd.Series(np.nan, index=c.index)
        ax.bar(x, values.fillna(0), color=cols, alpha=0.9 if col == "flops_per_env_step" else 0.5)
        if (values > 0).any():
            _log_si(ax)
        ax.set_xticks(x, order, rotation=45, ha="right")
        ax.set(ylabel="FLOPs (log)", title=title)
    ax = axes[0, 3]
    ax.bar(x, c.params_policy, color=cols)
    ax.bar(x, c.params_critic.fillna(0), bottom=c.params_policy, color=cols, alpha=0.45, hatch="//", edgecolor="0.3")
    ax.set_xticks(x, order, rotation=45, ha="right")
    ax.set(ylabel="parameters (count)", title="parameters")
    ax.legend(
        handles=[Patch(fc="0.45", label="policy"), Patch(fc="0.8", hatch="//", ec="0.3", label="critic")],
        fontsize="small",
        loc="upper left",
    )
    ax = axes[0, 4]
    f = final[(final.env == env) & (final.n > 0)].set_index("algo").reindex(order)
    px, py = c.wall_time_s.to_numpy(float), f.final_return_iqm.to_numpy(float)
    for i, a in enumerate(order):
        lo, hi = f.final_return_iqm_low.iloc[i], f.final_return_iqm_high.iloc[i]
        if np.isfinite(lo):
            ax.errorbar(px[i], py[i], yerr=[[py[i] - lo], [hi - py[i]]], color=colours[a], capsize=3, lw=1.2)
        ax.scatter(px[i], py[i], color=colours[a], s=60, edgecolor="0.2", zorder=3)
        if np.isfinite(px[i]) and np.isfinite(py[i]):
            ax.annotate(a, (px[i], py[i]), xytext=(4, 3), textcoords="offset points", fontsize="x-small")
    ok = np.isfinite(px) & np.isfinite(py)
    idx = np.argsort(px[ok])
    best, front = -np.inf, []
    for i in idx:
        if py[ok][i] > best:
            best = py[ok][i]
            front.append((px[ok][i], py[ok][i]))
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="0.4", ls="--", lw=1, zorder=1, label="Pareto front")
        ax.legend(fontsize="small", loc="lower right")
    ax.set(xlabel="wall time per run (s)", ylabel="final return (IQM, 95% CI)", title="return vs wall time")
    fig.suptitle(f"{env}: compute cost (means over seeds; bar colours as in the other figures)")
    return save(fig, folder, stem)


# ----------------------------------------------------------------------------------------------------------
# 5. GRPO group size


def group_size(table: pd.DataFrame, envs, colours, folder: Path) -> str:
    envs = [e for e in envs if not table.empty and table[(table.env == e) & table.group_size.notna()].shape[0]]
    specs = (
        ("final_return_iqm", "final_return_low", "final_return_high", "final return (IQM, 95% CI)", False),
        ("grad_rel_var_iqm", "grad_rel_var_low", "grad_rel_var_high", "gradient relative variance (log)", True),
        ("env_steps_per_update", None, None, "env steps per update", True),
        ("wall_time_s", None, None, "wall time per run (s)", False),
    )
    fig, axes = _figure(max(1, len(envs)), 4, w=3.9, h=3.2)
    if not envs:
        for ax in axes.flat:
            ax.remove()
        ax = fig.add_subplot(1, 1, 1)
        _no_data(ax, "No GRPO runs at several group sizes in this sweep:\nthe G sweep cannot be drawn.")
        return save(fig, folder, "group_size")
    for row in axes[1:]:
        row[1].sharey(axes[0, 1])  # gradient relative variance is unitless: one scale for every env
    logged = set()
    for col, _, _, _, log in specs:  # a column is on a log scale in every row or in none
        vals = table[col].to_numpy(float) if col in table else np.array([])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if log and vals.size and vals.max() / vals.min() > 10:
            logged.add(col)
    grpo_algos = []
    for row, env in zip(axes, envs):
        t = table[table.env == env]
        g = t[t.group_size.notna()].sort_values("group_size")
        ppo = t[t.algo == "ppo"]
        grpo_algos += list(g.algo)
        for ax, (col, lo, hi, ylabel, _) in zip(row, specs):
            ax.plot(g.group_size, g[col], color="0.35", lw=1, zorder=1)
            for r in g.itertuples():
                y = getattr(r, col)
                if lo and np.isfinite(getattr(r, lo)):
                    ax.errorbar(
                        r.group_size,
                        y,
                        yerr=[[y - getattr(r, lo)], [getattr(r, hi) - y]],
                        color=colours[r.algo],
                        capsize=3,
                    )
                ax.scatter(r.group_size, y, color=colours[r.algo], s=55, edgecolor="0.2", zorder=3)
            if not ppo.empty and np.isfinite(ppo[col].iloc[0]):
                ax.axhline(ppo[col].iloc[0], color=colours.get("ppo", "0.3"), ls="--", lw=1.3)
            ax.set_xscale("log", base=2)
            ax.set_xticks(g.group_size, [str(int(v)) for v in g.group_size])
            ax.minorticks_off()
            if col in logged:
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(mticker.NullFormatter())
            else:
                ylabel = ylabel.replace(" (log)", "")
            ax.set(xlabel="group size G", ylabel=ylabel)
        row[0].set_title(env, loc="left", fontsize="medium")
    extra = [Line2D([], [], color=colours.get("ppo", "0.3"), ls="--", label="ppo (reference)")]
    _legend(fig, list(dict.fromkeys(grpo_algos)), colours, extra)
    fig.suptitle("GRPO group-size sweep: return, gradient noise and sample/time cost against G")
    return save(fig, folder, "group_size")


# ----------------------------------------------------------------------------------------------------------
# 6. Reward hacking


def reward_hacking(
    points: pd.DataFrame,
    proxy: pd.DataFrame,
    gold: pd.DataFrame,
    fits: pd.DataFrame,
    envs,
    algos,
    colours,
    folder: Path,
) -> str:
    """Per column, the final proxy and gold reward (IQM with 95% CI; the gap between them is the hack); gold
    gain over the reference vs d = sqrt(KL) with the RL-form fit d(α − β log d)."""
    if points.empty:
        return _no_data_figure(
            folder,
            "reward_hacking",
            "Reward hacking: no TextGen runs in this sweep, so there is nothing to plot.\n"
            "Add --envs rlbench/TextGen-v0 to measure proxy vs gold reward and KL to reference.",
        )
    envs = list(dict.fromkeys(points.env))
    fig, axes = _figure(len(envs), 2, w=5.2, h=3.8)
    used = set()
    for row, env in zip(axes, envs):
        ax = row[0]
        finals = {
            kind: df[df.env == env].sort_values("env_steps").groupby("algo").last()
            for kind, df in (("proxy", proxy), ("gold", gold))
        }
        shown = [a for a in algos if a in finals["proxy"].index and a in finals["gold"].index]
        for y, a in enumerate(shown):
            used.add(a)
            pr, go = finals["proxy"].loc[a], finals["gold"].loc[a]
            ax.plot([go.iqm, pr.iqm], [y, y], color=colours[a], lw=1.5, alpha=0.6)
            for point, face in ((pr, "white"), (go, colours[a])):
                ax.errorbar(
                    point.iqm,
                    y,
                    xerr=[[max(0.0, point.iqm - point.low)], [max(0.0, point.high - point.iqm)]],
                    color=colours[a],
                    capsize=2,
                    lw=1,
                )
                ax.scatter(point.iqm, y, s=55, facecolor=face, edgecolor=colours[a], lw=1.5, zorder=3)
        ax.set_yticks(range(len(shown)), shown)
        ax.invert_yaxis()
        ax.set(xlabel="reward per completion at the final evaluation", title=f"{env}: final proxy and gold reward")
        ax = row[1]
        p = points[(points.env == env) & points.d.notna()]
        for a in algos:
            s = p[p.algo == a]
            if s.empty:
                continue
            used.add(a)
            ax.scatter(s.d, s.gold_gain, color=colours[a], s=9, alpha=0.35, lw=0)
            f = fits[(fits.env == env) & (fits.algo == a)]
            if not f.empty and np.isfinite(f.fit_alpha.iloc[0]) and (s.d > 0).any():
                dd = np.linspace(max(1e-3, s.d[s.d > 0].min()), s.d.max(), 100)
                ax.plot(dd, dd * (f.fit_alpha.iloc[0] - f.fit_beta.iloc[0] * np.log(dd)), color=colours[a], lw=2)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set(
            xlabel="d = √KL(π‖π_ref)  (√nats)",
            ylabel="gold reward − reference's gold",
            title="gold vs distance, fit R(d) = d(α − β log d)",
        )
    extra = [
        Line2D([], [], ls="", marker="o", mfc="white", mec="0.3", label="proxy reward (paid to the learner)"),
        Line2D([], [], ls="", marker="o", mfc="0.3", mec="0.3", label="gold reward (the true task)"),
    ]
    _legend(fig, [a for a in algos if a in used], colours, extra)
    fig.suptitle("Reward hacking on TextGen (left: IQM over seeds, 95% CI; right: one point per update)")
    return save(fig, folder, "reward_hacking")


def kl_frontier(frontier: pd.DataFrame, points: pd.DataFrame, runs: pd.DataFrame, folder: Path) -> str:
    """Gold reward against KL to the reference, a panel per (TextGen env, KL family): the β = 0 column's
    evaluations along training (a grey line per seed, its RL-form fit in black) and every β's final runs (dots)
    with their IQM and 95% intervals (cross), coloured by β. Gao et al.'s early-stopping test compares each
    cross with the grey lines at the same KL."""
    panels = list(dict.fromkeys(zip(frontier.env, frontier.family))) if not frontier.empty else []
    if not panels:
        return _no_data_figure(
            folder,
            "kl_frontier",
            "KL frontier: no TextGen column with a KL penalty and its β = 0 sibling in this sweep.\n"
            "Add --kl-coefs 0,0.1,1 (or ppo and ppo_kl) on rlbench/TextGen-v0.",
        )
    betas = sorted(set(frontier.beta[frontier.beta > 0]))
    cmap = plt.get_cmap("viridis")
    colour = {b: cmap(i / max(1, len(betas) - 1) * 0.9) for i, b in enumerate(betas)}
    fig, axes = _figure(1, len(panels), w=5.0, h=4.0)
    for ax, (env, family) in zip(axes[0], panels):
        rows = frontier[(frontier.env == env) & (frontier.family == family)]
        base = rows[rows.beta == 0].algo.iloc[0] if (rows.beta == 0).any() else None
        traj = points[(points.env == env) & (points.algo == base)]
        for _, g in traj.groupby("seed"):
            ax.plot(g.kl, g.gold, color="0.6", lw=0.9, alpha=0.8)
        fit = rows[rows.beta == 0]
        if not fit.empty and np.isfinite(fit.fit_alpha.iloc[0]) and (traj.kl > 0).any():
            ref_gold = float((traj.gold - traj.gold_gain).mean())
            dd = np.sqrt(np.geomspace(max(1e-3, traj.kl[traj.kl > 0].min()), traj.kl.max(), 100))
            ax.plot(
                dd**2, ref_gold + dd * (fit.fit_alpha.iloc[0] - fit.fit_beta.iloc[0] * np.log(dd)), color="k", lw=1.6
            )
        for r in rows[rows.beta > 0].itertuples():
            sel = runs[(runs.env == env) & (runs.algo == r.algo)]
            ax.scatter(sel.kl_final, sel.gold, color=colour[r.beta], s=14, alpha=0.6, lw=0)
            ax.errorbar(
                r.kl,
                r.gold,
                xerr=[[max(0.0, r.kl - r.kl_low)], [max(0.0, r.kl_high - r.kl)]],
                yerr=[[max(0.0, r.gold - r.gold_low)], [max(0.0, r.gold_high - r.gold)]],
                color=colour[r.beta],
                lw=1.8,
                capsize=3,
                marker="o",
                ms=5,
            )
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set(xlabel="KL(π‖π_ref) per answer (nats, symlog)", ylabel="gold reward", title=f"{env}: {family}")
    handles = [Line2D([], [], color="0.6", lw=1, label="β = 0, along training (per seed)")]
    handles += [Line2D([], [], color="k", lw=1.6, label="β = 0: fit R(d) = d(α − β log d)")]
    handles += [Line2D([], [], color=colour[b], marker="o", lw=1.8, label=f"β = {b:g}, final") for b in betas]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)))
    fig.suptitle("The KL frontier: final gold vs KL per β, against the unpenalised run stopped early")
    return save(fig, folder, "kl_frontier")


# ----------------------------------------------------------------------------------------------------------
# 7. Aggregates


def aggregates(agg: pd.DataFrame, algos, colours, folder: Path, tasks: str) -> str:
    metrics = list(dict.fromkeys(agg.metric)) if not agg.empty else []
    if not metrics:
        return _no_data_figure(folder, "aggregates", "no normalized scores (no finished non-TextGen runs)")
    fig, axes = _figure(1, len(metrics), w=3.4, h=0.45 * max(3, len(algos)) + 0.8)
    order = [a for a in algos if a in set(agg.algo)]
    for ax, m in zip(axes[0], metrics):
        d = agg[agg.metric == m].set_index("algo").reindex(order)
        y = np.arange(len(order))[::-1]
        for yi, a in zip(y, order):
            lo, hi, pt = d.loc[a, "low"], d.loc[a, "high"], d.loc[a, "point"]
            if np.isfinite(lo):
                ax.barh(yi, hi - lo, left=lo, height=0.6, color=colours[a], alpha=0.75)
            ax.plot([pt, pt], [yi - 0.3, yi + 0.3], color="0.1", lw=2)
        ax.set_yticks(y, order if m == metrics[0] else [""] * len(order))
        span = d[["low", "high", "point"]].to_numpy(float)
        span = span[np.isfinite(span)]
        lo, hi = float(span.min()), float(span.max())
        pad = 0.06 * (hi - lo) if hi > lo else 0.05 * max(1.0, abs(hi))
        ax.set_xlim(lo - pad, hi + pad)
        ax.set(title=m, xlabel="normalized score")
    fig.suptitle(f"Aggregate normalized final return, 95% stratified bootstrap CIs ({tasks})")
    return save(fig, folder, "aggregates")


def improvement(poi: pd.DataFrame, colours, folder: Path, tasks: str) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * max(3, len(poi)) + 1.4), layout="constrained")
    if poi.empty:
        _no_data(ax, "no algorithm pairs to compare")
        return save(fig, folder, "improvement")
    y = np.arange(len(poi))[::-1]
    for yi, r in zip(y, poi.itertuples()):
        if np.isfinite(r.low):
            ax.barh(yi, r.high - r.low, left=r.low, height=0.6, color=colours[r.x], alpha=0.75)
        ax.plot([r.p_x_better] * 2, [yi - 0.3, yi + 0.3], color="0.1", lw=2)
    ax.axvline(0.5, color="0.4", ls="--", lw=1)
    ax.margins(y=0.04)
    ax.set_yticks(y, [f"P({r.x} > {r.y})" for r in poi.itertuples()])
    ax.set_xlim(-0.02, 1.02)
    ax.set(
        xlabel="probability of improvement (0.5 = no difference)",
        title=f"Probability of improvement, 95% CIs\n({tasks})",
    )
    return save(fig, folder, "improvement")


def profiles(profile: pd.DataFrame, algos, colours, folder: Path, tasks: str) -> str:
    fig, ax = plt.subplots(figsize=(6.8, 4.6), layout="constrained")
    if profile.empty:
        _no_data(ax, "no normalized scores")
        return save(fig, folder, "profiles")
    used = []
    for a in algos:
        d = profile[profile.algo == a]
        if d.empty:
            continue
        used.append(a)
        ax.plot(d.tau, d.fraction, color=colours[a], lw=1.8, drawstyle="steps-post")
        ax.fill_between(d.tau, d.low, d.high, color=colours[a], alpha=0.15, lw=0, step="post")
    ax.set(
        xlabel="normalized score τ (0 = random, 1 = solved)",
        ylabel="fraction of runs with score > τ",
        ylim=(-0.02, 1.02),
        title=f"Performance profiles\n({tasks})",
    )
    _legend(fig, used, colours)
    return save(fig, folder, "profiles")
