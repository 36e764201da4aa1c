"""Turn a sweep directory into `<out>/report/`: report.md, a self-contained report.html, figures, tables.

    from rlbench.reports.render import render_report, ReportError
    render_report(Path("runs/cartpole-quick"))          # -> runs/cartpole-quick/report/report.html

Same run directory and seed → byte-identical tables (all bootstraps are seeded; floats rounded; rows sorted).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rlbench.reports import claims as C
from rlbench.reports import figures as F
from rlbench.reports import tables as T
from rlbench.reports.data import ReportError, Sweep, load_sweep
from rlbench.spec import Status, env_slug

__all__ = ["SECTIONS", "ReportError", "render_report"]

SECTIONS = (
    ("overview", "Overview"),
    ("claims", "Claims"),
    ("returns", "Final returns"),
    ("curves", "Learning curves"),
    ("variance", "Variance"),
    ("stability", "Stability"),
    ("compute", "Compute cost"),
    ("group", "GRPO group size"),
    ("hacking", "Reward hacking"),
    ("kl", "KL penalty vs early stopping"),
    ("aggregates", "Aggregates"),
    ("failures", "Failed and missing runs"),
    ("methods", "Methods"),
)
"""(anchor, title) of every report section, in order."""


# ----------------------------------------------------------------------------------------------------------
# Formatting


def fmt(x, digits: int = 3) -> str:
    """A number for people: '—' for missing, thousands separators for big values, 3 significant digits else."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if np.isnan(v):
        return "—"
    if np.isinf(v):
        return "∞" if v > 0 else "−∞"
    if abs(v) >= 1e6:
        for unit, scale in (("G", 1e9), ("M", 1e6)):
            if abs(v) >= scale:
                return f"{v / scale:.3g} {unit}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def ci(point, low, high, digits: int = 3) -> str:
    """'point [low, high]' with `digits` significant digits below 100; '(no CI)' without finite bounds."""
    if np.isnan(float(point)):
        return "—"
    if not (np.isfinite(float(low)) and np.isfinite(float(high))):
        return f"{fmt(point, digits)} (no CI)"
    return f"{fmt(point, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


@dataclass
class Block:
    """A piece of a section: a paragraph, a table (display frame), or a figure stem."""

    kind: str
    content: object
    caption: str = ""


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def text(self, s: str) -> Section:
        self.blocks.append(Block("text", s))
        return self

    def table(self, df: pd.DataFrame, caption: str = "") -> Section:
        self.blocks.append(Block("table", df, caption))
        return self

    def figure(self, stem: str, caption: str) -> Section:
        self.blocks.append(Block("figure", stem, caption))
        return self


# ----------------------------------------------------------------------------------------------------------
# Display tables


def _display_final(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "env": t.env,
            "algo": t.algo,
            "n / runs": [f"{n} / {m}" for n, m in zip(t.n, t.n_runs)],
            "final return IQM [95% CI]": [
                ci(*r) if n else T.CELL_EMPTY
                for n, *r in zip(t.n, t.final_return_iqm, t.final_return_iqm_low, t.final_return_iqm_high)
            ],
            "AUC IQM [95% CI]": [
                ci(*r) if n else T.CELL_EMPTY for n, *r in zip(t.n, t.auc_iqm, t.auc_iqm_low, t.auc_iqm_high)
            ],
            "mean ± std": [
                f"{fmt(m)} ± {fmt(s)}" if n else T.CELL_EMPTY
                for n, m, s in zip(t.n, t.final_return_mean, t.final_return_std)
            ],
        }
    )


def _display_cells(t: pd.DataFrame, cols: dict[str, str], rates: dict[str, str] | None = None) -> pd.DataFrame:
    out = pd.DataFrame({"env": t.env, "algo": t.algo, "n": t.n})
    for col, label in cols.items():
        out[label] = [
            ci(p, lo, hi) if n else T.CELL_EMPTY for n, p, lo, hi in zip(t.n, t[col], t[f"{col}_low"], t[f"{col}_high"])
        ]
    for col, label in (rates or {}).items():
        out[label] = [fmt(v) if n else T.CELL_EMPTY for n, v in zip(t.n, t[col])]
    return out


def _display_compute(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "env": t.env,
            "algo": t.algo,
            "n": t.n,
            "env steps/s": t.env_steps_per_s.map(fmt),
            "wall time (s)": [
                f"{fmt(m)} ± {fmt(s)}" if n else T.CELL_EMPTY for n, m, s in zip(t.n, t.wall_time_s, t.wall_time_s_std)
            ],
            "rollout / update (s)": [
                f"{fmt(r)} / {fmt(u)}" if n else T.CELL_EMPTY for n, r, u in zip(t.n, t.rollout_time_s, t.update_time_s)
            ],
            "FLOPs / env step": t.flops_per_env_step.map(fmt),
            "FLOPs / update": t.flops_per_update.map(fmt),
            "params (policy + critic)": [
                f"{fmt(p)} + {fmt(c)}" if n else T.CELL_EMPTY for n, p, c in zip(t.n, t.params_policy, t.params_critic)
            ],
            "peak memory (MB)": t.peak_rss_mb.map(fmt),
        }
    )


def _display_group(t: pd.DataFrame) -> pd.DataFrame:
    if t.empty:
        return t
    return pd.DataFrame(
        {
            "env": t.env,
            "algo": t.algo,
            "G": t.group_size.map(lambda g: "—" if not np.isfinite(g) else str(int(g))),
            "n": t.n,
            "final return IQM [95% CI]": [
                ci(*r) for r in zip(t.final_return_iqm, t.final_return_low, t.final_return_high)
            ],
            "grad rel. variance IQM [95% CI]": [
                ci(*r) for r in zip(t.grad_rel_var_iqm, t.grad_rel_var_low, t.grad_rel_var_high)
            ],
            "env steps / update": t.env_steps_per_update.map(fmt),
            "updates": t.updates.map(fmt),
            "wall time (s)": t.wall_time_s.map(fmt),
        }
    )


# ----------------------------------------------------------------------------------------------------------
# Writers


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"

    def esc(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            s = str(v)
            cls = f' class="{s}"' if s in (C.SUPPORTED, C.CONTRADICTED, C.INCONCLUSIVE, T.CELL_EMPTY) else ""
            cells.append(f"<td{cls}>{html.escape(s)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #aaa;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#f0f0f0}tr:nth-child(even){background:#fafafa}
td.supported{background:#d7f0dd}td.contradicted{background:#f6d3d3}td.inconclusive{background:#f3f0d8}
td.empty{color:#a00;font-style:italic}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#444}
nav ul{columns:3}code{background:#f4f4f4;padding:0 3px}
"""


def _write_md(path: Path, title: str, sections: list[Section]) -> None:
    parts = [f"# {title}", ""]
    parts += ["Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in sections), ""]
    for s in sections:
        parts += [f'<a id="{s.anchor}"></a>', f"## {s.title}", ""]
        for b in s.blocks:
            if b.kind == "text":
                parts += [str(b.content), ""]
            elif b.kind == "table":
                if b.caption:
                    parts += [f"**{b.caption}**", ""]
                parts += [_md_table(b.content), ""]
            else:
                parts += [f"![{b.caption}](figures/{b.content}.png)", "", f"_{b.caption}_", ""]
    path.write_text("\n".join(parts), encoding="utf-8")


def _md_inline_to_html(s: str) -> str:
    """Escape text, then render the few inline marks the report uses (**bold**, `code`)."""
    out = html.escape(s)
    for mark, tag in (("**", "strong"), ("`", "code")):
        pieces = out.split(mark)
        if len(pieces) % 2 == 1 and len(pieces) > 1:
            out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
    return out


def _write_html(path: Path, title: str, sections: list[Section], figures: Path) -> None:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav><ul>",
    ]
    parts += [f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections]
    parts.append("</ul></nav>")
    for s in sections:
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if b.kind == "text":
                for para in str(b.content).split("\n\n"):
                    if para.lstrip().startswith("- "):
                        items = [line.strip()[2:] for line in para.splitlines() if line.strip()]
                        parts.append("<ul>" + "".join(f"<li>{_md_inline_to_html(i)}</li>" for i in items) + "</ul>")
                    else:
                        parts.append(f"<p>{_md_inline_to_html(para)}</p>")
            elif b.kind == "table":
                if b.caption:
                    parts.append(f"<p><strong>{html.escape(b.caption)}</strong></p>")
                parts.append(_html_table(b.content))
            else:
                data = base64.b64encode((figures / f"{b.content}.png").read_bytes()).decode("ascii")
                cap = html.escape(b.caption)
                parts.append(
                    f'<figure><img alt="{cap}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{cap}</figcaption></figure>"
                )
        parts.append("</section>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------


def _clean(folder: Path, suffixes: tuple[str, ...]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file() and f.suffix in suffixes:
            f.unlink()


@dataclass
class Results:
    """Everything a report shows, computed from a sweep: per-run values, tables, curves and the claims table."""

    sweep: Sweep
    seed: int
    runs: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    curves: dict[str, pd.DataFrame]
    scores: dict[str, np.ndarray]

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)


CURVE_COLUMNS = (
    "train/grad_cosine",
    "train/grad_rel_var",
    "train/approx_kl",
    "train/clip_fraction",
    "train/entropy",
    "train/kl_ref",
    "textgen/proxy_reward",
    "textgen/gold_reward",
)


def compute(sweep: Sweep, seed: int) -> Results:
    """Every table and curve of the report (pure: the same sweep and seed give the same numbers)."""
    runs = T.per_run(sweep)
    scores, norm = T.normalized_scores(sweep, runs)
    points = T.hacking_points(sweep)
    kl_points = T.kl_points(sweep)
    tables = {
        "per_run": runs.sort_values(["env", "algo", "seed"]) if not runs.empty else runs,
        "final_returns": T.final_table(sweep, runs, seed),
        "variance": T.variance_table(sweep, runs, seed),
        "stability": T.stability_table(sweep, runs, seed),
        "compute_cost": T.compute_table(sweep, runs),
        "group_size": T.group_table(sweep, runs, seed),
        "failed_runs": T.failed_table(sweep),
        "missing_cells": T.missing_table(sweep),
        "normalization": norm,
        "aggregates": T.aggregate_table(scores, seed),
        "probability_of_improvement": T.improvement_table(scores, seed),
        "performance_profile": T.profile_table(scores, seed),
        "reward_hacking_points": points,
        "reward_hacking": T.hacking_table(sweep, runs, points, seed),
        "kl_points": kl_points,
        "kl_frontier": T.kl_frontier(sweep, runs, kl_points, seed),
        "claims": C.evaluate(runs, sweep.configs, seed),
    }
    curves = {c: T.curves(sweep, c, seed, bins=T.BINS // 2) for c in CURVE_COLUMNS}
    curves["eval/return_mean"] = T.eval_curves(sweep, seed)
    return Results(sweep, seed, runs, tables, curves, scores)


PANEL_GROUPS = (
    ("REINFORCE family (whole episodes, one step)", lambda c: c["collect"] == "episodes" and c["group_size"] <= 1),
    ("A2C: one gradient step per batch of env steps", lambda c: c["collect"] == "steps" and c["epochs"] == 1),
    ("PPO family (GAE, epochs of minibatches)", lambda c: c["collect"] == "steps"),
    ("GRPO: group baseline, G episodes per start", lambda c: c["advantage"] == "group"),
    ("group sampling with a critic baseline", lambda c: True),
)
"""Learning-curve panels: (title, which columns' configs it holds), the first that matches."""


def panel_groups(sweep: Sweep) -> dict[str, list[str]]:
    """Panel title → the columns it draws, in report order, by each column's recorded config."""
    groups: dict[str, list[str]] = {}
    for algo in sweep.algos:
        config = next((c for (_, a), c in sweep.configs.items() if a == algo), None)
        if config is None:
            continue
        title = next(t for t, holds in PANEL_GROUPS if holds(config))
        groups.setdefault(title, []).append(algo)
    return {t: groups[t] for t, _ in PANEL_GROUPS if t in groups}


def draw_figures(r: Results, figs: Path) -> dict[str, dict[str, str]]:
    """Draw every figure into `figs`; return {"variance" | "stability" | "compute": {env: figure stem}}."""
    sweep, runs, curves, final, norm = r.sweep, r.runs, r.curves, r.final_returns, r.normalization
    F.setup()
    colours = sweep.colours()
    algos = list(sweep.algos)
    miss_by_env = {e: sorted(set(final[(final.env == e) & (final.n == 0)].algo)) for e in sweep.envs}
    tasks = f"{len(norm)} env{'s' if len(norm) != 1 else ''}: " + ", ".join(norm.env) if len(norm) else "no envs"
    F.learning_curves(curves["eval/return_mean"], sweep.envs, panel_groups(sweep), colours, figs, miss_by_env)
    stems: dict[str, dict[str, str]] = {"variance": {}, "stability": {}, "compute": {}}
    for env in sweep.envs:
        slug = env_slug(env).replace("__", "-")
        stems["variance"][env] = F.variance(
            env,
            curves["train/grad_cosine"],
            curves["train/grad_rel_var"],
            runs,
            algos,
            colours,
            figs,
            f"variance_{slug}",
        )
        stems["stability"][env] = F.stability(env, curves, r.stability, algos, colours, figs, f"stability_{slug}")
        stems["compute"][env] = F.compute(env, r.compute_cost, final, algos, colours, figs, f"compute_{slug}")
    F.group_size(r.group_size, sweep.envs, colours, figs)
    F.reward_hacking(
        r.reward_hacking_points,
        curves["textgen/proxy_reward"],
        curves["textgen/gold_reward"],
        r.reward_hacking,
        sweep.envs,
        algos,
        colours,
        figs,
    )
    F.kl_frontier(r.kl_frontier, r.kl_points, runs, figs)
    F.aggregates(r.aggregates, algos, colours, figs, tasks)
    F.improvement(r.probability_of_improvement, colours, figs, tasks)
    F.profiles(r.performance_profile, algos, colours, figs, tasks)
    return stems


def _overview_section(r: Results, s: Section) -> None:
    sweep, done = r.sweep, r.sweep.done
    n_cells = len(sweep.envs) * len(sweep.algos) * len(sweep.seeds)
    s.text(
        f"Sweep `{sweep.out}`: {len(sweep.envs)} env(s) × {len(sweep.algos)} algorithm column(s) × "
        f"{len(sweep.seeds)} seed(s) = {n_cells} cells; {len(sweep.runs)} planned runs, {len(done)} finished "
        f"training, {int((sweep.runs.status == Status.OK).sum())} ok, {len(r.failed_runs)} not ok, "
        f"{len(r.missing_cells)} planned run(s) missing (not finished).{_left_out(sweep)}\n\n"
        f"- envs: {', '.join(sweep.envs)}\n- algorithms: {', '.join(sweep.algos)}\n"
        f"- seeds: {', '.join(map(str, sweep.seeds))}\n- bootstrap: {T.REPS} stratified resamples for tables, "
        f"{C.REPS} for claims, seed {r.seed}"
    )
    verdicts = C.claim_verdicts(r.claims)
    s.table(
        pd.DataFrame(
            [{"claim": c.id, "statement": c.statement, "verdict": verdicts[c.id]} for c in C.CLAIMS],
        ),
        "Claims at a glance (from the primary tests, Holm-corrected)",
    )


def _display_claim_rows(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "role": t.role,
            "test": t.test,
            "env": t.env,
            "differs in": t.differs_in.fillna("").replace("", "—"),
            "measured [95% CI]": [ci(*v, digits=2) for v in zip(t.effect, t.ci_low, t.ci_high)],
            "claimed": t.claimed,
            "p (Holm)": [
                f"{fmt(p, 2)}" + (f" ({fmt(h, 2)})" if np.isfinite(h) else "")
                if role == C.PRIMARY and np.isfinite(p)
                else ""
                for role, p, h in zip(t.role, t.p_value, t.p_holm)
            ],
            "n": [
                f"{a} vs {b}" + (f" (∞: {ia} vs {ib})" if ia or ib else "")
                for a, b, ia, ib in zip(t.n_a, t.n_b, t.n_inf_a, t.n_inf_b)
            ],
            "verdict": [
                v + (f" — supports: {s_}" if s_ else "") + (f"; contradicts: {c_}" if c_ else "")
                for v, s_, c_ in zip(t.verdict, t.envs_support, t.envs_contradict)
            ],
            "note": t.note,
        }
    )


def _claims_section(r: Results, s: Section) -> None:
    table, verdicts = r.claims, C.claim_verdicts(r.claims)
    n_inf = int(np.isinf(r.runs["grad_noise_scale"]).sum()) if "grad_noise_scale" in r.runs else 0
    s.text(
        "Each claim (`docs/claims-and-metrics.md`) is a set of pre-registered tests (`reports/claims.py`, TESTS). "
        "A test compares "
        "two matrix columns; *differs in* lists the AlgoConfig fields in which their resolved configs differ, read "
        "from the runs' config.json. Per env: the effect with a 95% bootstrap interval and a verdict (supported / "
        f"contradicted when the interval excludes no effect; **{C.SMALL_N}** with fewer than {C.MIN_RUNS} finished "
        "runs on either side). Combined: per-env effects pooled (geometric mean of ratios, mean of differences and "
        "probabilities) with an env-stratified bootstrap; its p-value is Holm–Bonferroni corrected across the "
        f"report's primary tests (α = {C.ALPHA}), and it is supported only if the pooled effect lies on the "
        "claimed side and no env's estimate on the other. **context** rows carry no verdict.\n\n"
        f"Gradient noise scale: {n_inf} finished run(s) had Σ|G|² ≤ 0 (noise swamps the mean gradient); they count "
        "as infinitely noisy (∞ in the n column), which is why noise tests are rank-based (P(A > B))."
    )
    others = sorted({a for (_, a), cfg in r.sweep.configs.items() if cfg.get("trainer", "rlbench") != "rlbench"})
    if others:
        s.text(
            f"Columns another library trains ({', '.join(others)}: Stable-Baselines3) are shown beside the native "
            "ones in the other sections and take part in no test here."
        )
    for c in C.CLAIMS:
        rows = table[table.claim == c.id]
        s.text(f"**{c.id} — {verdicts[c.id]}.** {c.statement}")
        s.table(_display_claim_rows(rows))


def _returns_section(r: Results, S_: dict[str, Section]) -> None:
    """Final returns and learning curves."""
    S_["returns"].text(
        "Final return = mean evaluation return after training (fixed evaluation seeds). AUC = area "
        "under the evaluation curve divided by its env-step range (the curve's average height). IQM "
        "with 95% stratified bootstrap CI over seeds; n / runs = finished / run directories. "
        f"'{T.CELL_EMPTY}' marks a cell with no finished run."
    )
    S_["returns"].table(_display_final(r.final_returns), "Final evaluation return per env × algorithm")
    S_["curves"].figure(
        "learning_curves",
        "Evaluation return vs env steps: held-out seeds, deterministic actions (TextGen: sampled answers to "
        "held-out prompts, scored by the reward the learner is paid), before training and at the same fractions "
        "of every run's budget; IQM over seeds with its 95% bootstrap band. One row per env and one panel per "
        "algorithm family (REINFORCE, PPO, GRPO, group sampling with a critic), so each panel holds a few bands.",
    )


def _variance_section(r: Results, S_: dict[str, Section], stems: dict[str, dict[str, str]]) -> None:
    """Gradient noise per cell and its figures."""
    S_["variance"].text(
        "Gradient noise: policy-loss gradients of K disjoint minibatches of the same batch before "
        "the update's first optimizer step. Cosine = mean pairwise cosine (higher = less noise); "
        "relative variance = E‖g_k − ḡ‖² / ‖ḡ‖² (lower = less noise); noise scale = Σ tr(Σ) / Σ |G|² over the "
        "run, McCandlish et al.'s (2018) unbiased estimate from the minibatch and full-batch gradients, which does "
        "not depend on batch size, so it compares algorithms whose batches differ. Per run: relative variance as "
        "a median over updates, cosine as a mean. A run whose Σ |G|² ≤ 0 (the mean gradient is lost in the noise) "
        "has an infinite noise scale: it is kept and counted, and the table shows the median over runs."
    )
    S_["variance"].table(
        _display_cells(
            r.variance,
            {
                "grad_rel_var_iqm": "grad rel. variance",
                "grad_cosine_iqm": "grad cosine",
                "adv_std_iqm": "advantage std",
            },
            {
                "grad_noise_scale_median": "grad noise scale (median)",
                "grad_noise_scale_n_inf": "runs with Σ|G|² ≤ 0 (∞)",
                "final_return_seed_std": "across-seed std of final return",
            },
        )
    )
    for env, stem in stems["variance"].items():
        S_["variance"].figure(
            stem, f"{env}: gradient cosine and relative variance over training; final return per seed (box: quartiles)."
        )


def _stability_section(r: Results, S_: dict[str, Section], stems: dict[str, dict[str, str]]) -> None:
    """Update size and stability per cell and its figures."""
    S_["stability"].text(
        "Approx KL(π_old‖π_new) (k3), clip fraction, entropy and KL to the frozen reference: "
        "per-run means over updates. Drawdown = largest drop from the running best of the "
        "evaluation curve as a fraction of the env's score range (the range normalized scores use); "
        "collapse = final return below half the "
        "run's best; divergence = run stopped on NaN/inf."
    )
    S_["stability"].table(
        _display_cells(
            r.stability,
            {
                "approx_kl_iqm": "approx KL",
                "clip_fraction_iqm": "clip fraction",
                "entropy_iqm": "entropy",
                "kl_ref_iqm": "KL to ref",
                "explained_variance_iqm": "explained variance",
                "drawdown_iqm": "drawdown",
            },
            {"collapse_rate": "collapse rate", "divergence_rate": "divergence rate"},
        )
    )
    for env, stem in stems["stability"].items():
        S_["stability"].figure(stem, f"{env}: per-update stability metrics and per-algorithm drawdown / collapse.")


def _compute_section(r: Results, S_: dict[str, Section], stems: dict[str, dict[str, str]]) -> None:
    """Runtime, FLOPs, parameters and memory per cell."""
    S_["compute"].text(
        "Runtime table in the style of openrlbenchmark: means over finished seeds. FLOPs from PyTorch's flop "
        "counter over the whole run (rollouts, updates, measurement); per env step is the quantity C5 compares, "
        "per update is context (a GRPO update holds G times more episodes). Peak memory = peak resident set size "
        "of the worker process."
    )
    S_["compute"].table(_display_compute(r.compute_cost), "Compute cost per env × algorithm")
    for env, stem in stems["compute"].items():
        S_["compute"].figure(
            stem,
            f"{env}: wall time split (rollout, update, other), FLOPs per env step and per update, parameters "
            "(policy, critic), and final return vs wall time with the Pareto front.",
        )


def _group_section(r: Results, S_: dict[str, Section]) -> None:
    """GRPO by group size."""
    gs = S_["group"]
    if r.group_size.empty or r.group_size.group_size.notna().sum() == 0:
        gs.text("No GRPO (group-advantage) runs in this sweep.")
    else:
        gs.table(_display_group(r.group_size), "GRPO by group size G (ppo as reference)")
    gs.figure(
        "group_size",
        "GRPO group size G against final return, gradient noise, env steps per update and wall time; dashed line: ppo.",
    )


def _hacking_section(r: Results, S_: dict[str, Section]) -> None:
    """Proxy vs gold reward on TextGen."""
    hs = S_["hacking"]
    hack = r.reward_hacking
    if hack.empty:
        hs.text("No TextGen runs in this sweep: reward hacking (C4) was not measured.")
    else:
        hs.text(
            "Proxy = reward the learner sees; gold = hidden true reward; gap = proxy − gold at the end of "
            "training; d = √KL to the reference. The Gao et al. (2022) RL form R(d) = d(α − β log d) is fitted by "
            "least squares to the gold gain over the reference, pooled over seeds; d_peak = e^(α/β − 1)."
        )
        hs.table(hack.assign(**{c: hack[c].map(fmt) for c in hack.columns if c not in ("env", "algo", "n")}))
    hs.figure(
        "reward_hacking",
        "Left: each column's proxy reward (hollow, what the learner is paid) and gold reward (filled, the true "
        "task) at the final evaluation, IQM over seeds with 95% CIs; the gap between them is the hack. Right: gold "
        "gain over the reference model vs d = √KL with the RL-form fit.",
    )


def _kl_section(r: Results, S_: dict[str, Section]) -> None:
    """C4 as Gao et al. tested it: the β frontier and each penalised column against early stopping."""
    ks = S_["kl"]
    f = r.kl_frontier
    if f.empty:
        ks.text(
            "No TextGen column with a KL penalty ran next to its β = 0 sibling, so the KL frontier and the "
            "early-stopping test were not measured (run e.g. `--algos ppo_kl,grpo --kl-coefs 0,0.1,0.3,1`)."
        )
    else:
        ks.text(
            "Per KL family and β: the final KL to the reference (nats per answer) and gold reward, IQM [95% CI] "
            "over seeds. *gold of β = 0 at that KL* is Gao et al.'s early-stopping comparison: the gold the "
            "unpenalised run of the same seed (and reference model) had when its KL first reached this run's "
            "final KL, interpolated between evaluations. A KL penalty beats stopping early where gold exceeds "
            "it; C4's primary tests (Claims) put intervals and Holm-corrected verdicts on the difference. The "
            "RL-form fit R(d) = d(α − β_fit log d) of gold − reference gold against d = √KL uses every evaluation "
            "of the column, with 95% intervals from resampling seeds."
        )
        shown = pd.DataFrame(
            {
                "env": f.env,
                "family": f.family,
                "β": f.beta.map(lambda b: f"{b:g}"),
                "n": f.n,
                "final KL": [ci(a, b, c) for a, b, c in zip(f.kl, f.kl_low, f.kl_high)],
                "final gold": [ci(a, b, c) for a, b, c in zip(f.gold, f.gold_low, f.gold_high)],
                "gold of β = 0 at that KL": f.early_stop_gold.map(fmt),
                "fit α": [ci(a, b, c) for a, b, c in zip(f.fit_alpha, f.fit_alpha_low, f.fit_alpha_high)],
                "fit β": [ci(a, b, c) for a, b, c in zip(f.fit_beta, f.fit_beta_low, f.fit_beta_high)],
            }
        )
        ks.table(shown, "The KL frontier and the early-stopping comparison (tables/kl_frontier.csv)")
    ks.figure(
        "kl_frontier",
        "Gold vs KL to the reference: β = 0 along training (grey, per seed; black: RL-form fit) and each β's final "
        "runs (dots; cross: IQM with 95% intervals). A cross above the grey lines at its KL beats early stopping.",
    )


def _aggregates_section(r: Results, S_: dict[str, Section]) -> None:
    """Normalized aggregates across envs (rliable)."""
    ag = S_["aggregates"]
    norm, agg, poi = r.normalization, r.aggregates, r.probability_of_improvement
    if len(norm):
        ag.text(
            "Normalized score = (final return − low) / (high − low) per env; aggregates pool runs × envs "
            "(rliable, Agarwal et al. 2021) with 95% stratified bootstrap CIs."
        )
        ag.table(norm.assign(low=norm.low.map(fmt), high=norm.high.map(fmt)), "Normalization")
        ag.table(
            pd.DataFrame(
                {
                    "metric": agg.metric,
                    "algo": agg.algo,
                    "n": agg.n,
                    "value [95% CI]": [ci(*r) for r in zip(agg.point, agg.low, agg.high)],
                }
            )
        )
        ag.table(
            pd.DataFrame(
                {
                    "comparison": [f"P({x} > {y})" for x, y in zip(poi.x, poi.y)],
                    "probability [95% CI]": [ci(*r) for r in zip(poi.p_x_better, poi.low, poi.high)],
                    "n": [f"{a} vs {b}" for a, b in zip(poi.n_x, poi.n_y)],
                }
            ),
            "Probability of improvement",
        )
    else:
        ag.text("No finished non-TextGen runs: no normalized aggregates.")
    ag.figure(
        "aggregates",
        "IQM, median, mean and optimality gap of normalized final return (bar: 95% CI; line: point estimate).",
    )
    ag.figure("improvement", "Probability that the first algorithm beats the second on a random run of a random env.")
    ag.figure("profiles", "Performance profiles: fraction of runs above each normalized score, 95% band.")


def _left_out(sweep: Sweep) -> str:
    """One sentence naming the run directories under the sweep that its plan does not hold ('' when none)."""
    if not sweep.left_out:
        return ""
    return f" Left out, not in the plan: {len(sweep.left_out)} run(s) ({', '.join(sweep.left_out)})."


def _failures_section(r: Results, S_: dict[str, Section]) -> None:
    """Runs that are not ok and cells without a finished run."""
    fs, failed, missing = S_["failures"], r.failed_runs, r.missing_cells
    fs.table(failed.assign(seed=failed.seed.astype(str)), "Runs that are not ok (status and reason)")
    fs.table(
        missing.assign(seed=missing.seed.astype(str)),
        "Missing: planned runs that did not finish training (failed, unfinished or never started), with the reason",
    )


def _methods_section(r: Results, S_: dict[str, Section]) -> None:
    """Statistics and their caveats."""
    S_["methods"].text(
        "Statistics after Agarwal et al. (2021): interquartile mean (IQM) across seeds, percentile intervals of a "
        f"stratified bootstrap ({T.REPS} resamples, seeded), probability of improvement (Mann–Whitney), "
        "performance profiles. An interval needs at least 2 finished seeds. Tables in `tables/` hold the raw numbers "
        "(6 significant digits); `per_run.csv` has every per-run quantity the report aggregates.\n\n"
        f"Claims: {C.REPS} bootstrap resamples per test, enough that interval ends repeat to their printed digits "
        "across bootstrap seeds; p-values are two-sided percentile-bootstrap p-values, Holm–Bonferroni adjusted "
        f"across the primary tests; a verdict needs {C.MIN_RUNS} finished runs per side in every env. Caveat: at "
        "n = 5 runs per side the percentile bootstrap under-covers (simulated coverage 0.89–0.91 for a nominal "
        "0.95, REVIEW.md), so a 95% interval here is closer to a 90% one; 10 seeds per cell bring it nearer "
        "nominal. `tables/claims.csv` and `claims.json` hold one row per (claim, test, env or combined)."
    )


def build_sections(r: Results, stems: dict[str, dict[str, str]]) -> list[Section]:
    """The report's sections, in SECTIONS order."""
    S_ = {a: Section(a, t) for a, t in SECTIONS}
    _overview_section(r, S_["overview"])
    _claims_section(r, S_["claims"])
    _returns_section(r, S_)
    _variance_section(r, S_, stems)
    _stability_section(r, S_, stems)
    _compute_section(r, S_, stems)
    _group_section(r, S_)
    _hacking_section(r, S_)
    _kl_section(r, S_)
    _aggregates_section(r, S_)
    _failures_section(r, S_)
    _methods_section(r, S_)
    return [S_[a] for a, _ in SECTIONS]


def write_tables(r: Results, tabs: Path) -> None:
    """tables/<name>.csv for every table, and claims.json (the claims table as records)."""
    for name, df in r.tables.items():
        if name not in ("reward_hacking_points", "kl_points"):
            T.write_csv(df, tabs / f"{name}.csv")
    records = [{k: _json_value(v) for k, v in row.items()} for row in T.round_sig(r.claims).to_dict("records")]
    (tabs / "claims.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")


def _json_value(v: object) -> object:
    """A table cell as strict JSON: NaN → null, ±inf → "inf" / "-inf", numpy scalars → Python numbers."""
    if isinstance(v, (float, np.floating)):
        return None if np.isnan(v) else ("inf" if v > 0 else "-inf") if np.isinf(v) else float(v)
    return v.item() if isinstance(v, np.generic) else v


def render_report(out: Path, seed: int = 0) -> Path:
    """Write `out/report/` (report.md, report.html, figures/*.png|svg, tables/*.csv, tables/claims.json);
    return the report dir. Raises ReportError (a ValueError) if `out` does not exist or holds no runs."""
    out = Path(out)
    sweep = load_sweep(out)
    report = out / "report"
    figs, tabs = report / "figures", report / "tables"
    _clean(figs, (".png", ".svg"))
    _clean(tabs, (".csv", ".json"))
    results = compute(sweep, seed)
    write_tables(results, tabs)
    sections = build_sections(results, draw_figures(results, figs))
    title = f"rlbench report: {out.name}"
    _write_md(report / "report.md", title, sections)
    _write_html(report / "report.html", title, sections, figs)
    return report
