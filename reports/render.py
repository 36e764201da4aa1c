"""Turn a sweep directory into `<out>/report/`: report.md, a self-contained report.html, figures, tables.

    from rlbench.reports.render import render_report, ReportError
    render_report(Path("runs/cartpole-quick"))          # -> runs/cartpole-quick/report/report.html

Same run directory and seed → byte-identical tables (all bootstraps are seeded; floats rounded; rows sorted).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rlbench.matrix import env_slug
from rlbench.reports import claims as C
from rlbench.reports import figures as F
from rlbench.reports import tables as T
from rlbench.reports.data import ReportError, load_sweep

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
    if not np.isfinite(v):
        return "—"
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


def ci(point, low, high) -> str:
    if not np.isfinite(float(point)):
        return "—"
    if not (np.isfinite(float(low)) and np.isfinite(float(high))):
        return f"{fmt(point)} (no CI)"
    return f"{fmt(point)} [{fmt(low)}, {fmt(high)}]"


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
                ci(*r) if n else "missing"
                for n, *r in zip(t.n, t.final_return_iqm, t.final_return_iqm_low, t.final_return_iqm_high)
            ],
            "AUC IQM [95% CI]": [
                ci(*r) if n else "missing" for n, *r in zip(t.n, t.auc_iqm, t.auc_iqm_low, t.auc_iqm_high)
            ],
            "mean ± std": [
                f"{fmt(m)} ± {fmt(s)}" if n else "missing"
                for n, m, s in zip(t.n, t.final_return_mean, t.final_return_std)
            ],
        }
    )


def _display_cells(t: pd.DataFrame, cols: dict[str, str], rates: dict[str, str] | None = None) -> pd.DataFrame:
    out = pd.DataFrame({"env": t.env, "algo": t.algo, "n": t.n})
    for col, label in cols.items():
        out[label] = [
            ci(p, lo, hi) if n else "missing" for n, p, lo, hi in zip(t.n, t[col], t[f"{col}_low"], t[f"{col}_high"])
        ]
    for col, label in (rates or {}).items():
        out[label] = [fmt(v) if n else "missing" for n, v in zip(t.n, t[col])]
    return out


def _display_compute(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "env": t.env,
            "algo": t.algo,
            "n": t.n,
            "env steps/s": t.env_steps_per_s.map(fmt),
            "wall time (s)": [
                f"{fmt(m)} ± {fmt(s)}" if n else "missing" for n, m, s in zip(t.n, t.wall_time_s, t.wall_time_s_std)
            ],
            "rollout / update (s)": [
                f"{fmt(r)} / {fmt(u)}" if n else "missing" for n, r, u in zip(t.n, t.rollout_time_s, t.update_time_s)
            ],
            "FLOPs / update": t.flops_per_update.map(fmt),
            "params (policy + critic)": [
                f"{fmt(p)} + {fmt(c)}" if n else "missing" for n, p, c in zip(t.n, t.params_policy, t.params_critic)
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


def _display_claim(c: C.Claim) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "role": r.role,
                "metric": r.metric,
                "comparison": r.comparison,
                "effect": r.effect,
                "measured [95% CI]": ci(*r.interval),
                "no effect": fmt(r.null),
                "claimed": ("> " if r.direction > 0 else "< ") + fmt(r.null),
                "verdict": r.verdict,
                "n": f"{r.n_x} vs {r.n_y}" if r.n_y else str(r.n_x),
            }
            for r in c.rows
        ]
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
            cls = f' class="{s}"' if s in (C.SUPPORTED, C.CONTRADICTED, C.INCONCLUSIVE, "missing") else ""
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
td.missing{color:#a00;font-style:italic}
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


def render_report(out: Path, seed: int = 0) -> Path:
    """Write `out/report/` (report.md, report.html, figures/*.png|svg, tables/*.csv); return the report dir.

    Raises ReportError (a ValueError) if `out` does not exist or holds no runs.
    """
    out = Path(out)
    sweep = load_sweep(out)
    report = out / "report"
    figs, tabs = report / "figures", report / "tables"
    _clean(figs, (".png", ".svg"))
    _clean(tabs, (".csv",))

    runs = T.per_run(sweep)
    final = T.final_table(sweep, runs, seed)
    var = T.variance_table(sweep, runs, seed)
    stab = T.stability_table(sweep, runs, seed)
    cost = T.compute_table(sweep, runs)
    group = T.group_table(sweep, runs, seed)
    failed = T.failed_table(sweep)
    missing = T.missing_table(sweep, runs)
    scores, norm = T.normalized_scores(sweep, runs)
    agg = T.aggregate_table(scores, seed)
    poi = T.improvement_table(scores, seed)
    prof = T.profile_table(scores, seed)
    points = T.hacking_points(sweep)
    hack = T.hacking_table(sweep, runs, points, seed)
    claims = C.evaluate_claims(runs, seed)
    claims_df = C.claims_table(claims)

    curve_cols = (
        "train/grad_cosine",
        "train/grad_rel_var",
        "train/approx_kl",
        "train/clip_fraction",
        "train/entropy",
        "train/kl_ref",
        "textgen/proxy_reward",
        "textgen/gold_reward",
    )
    curves = {c: T.curves(sweep, c, seed, bins=T.BINS // 2) for c in curve_cols}
    curves["eval/return_mean"] = T.eval_curves(sweep, seed)

    runs_sorted = runs.sort_values(["env", "algo", "seed"]) if not runs.empty else runs
    for name, df in (
        ("per_run", runs_sorted),
        ("final_returns", final),
        ("variance", var),
        ("stability", stab),
        ("compute_cost", cost),
        ("group_size", group),
        ("failed_runs", failed),
        ("missing_cells", missing),
        ("normalization", norm),
        ("aggregates", agg),
        ("probability_of_improvement", poi),
        ("performance_profile", prof),
        ("reward_hacking", hack),
        ("claims", claims_df),
    ):
        T.write_csv(df, tabs / f"{name}.csv")

    # ---- figures
    F.setup()
    colours = sweep.colours()
    algos = list(sweep.algos)
    miss_by_env = {e: sorted(set(final[(final.env == e) & (final.n == 0)].algo)) for e in sweep.envs}
    tasks = f"{len(norm)} env{'s' if len(norm) != 1 else ''}: " + ", ".join(norm.env) if len(norm) else "no envs"
    F.learning_curves(curves["eval/return_mean"], sweep.envs, algos, colours, figs, miss_by_env)
    var_stems, stab_stems, cost_stems = {}, {}, {}
    for env in sweep.envs:
        slug = env_slug(env).replace("__", "-")
        var_stems[env] = F.variance(
            env,
            curves["train/grad_cosine"],
            curves["train/grad_rel_var"],
            runs,
            algos,
            colours,
            figs,
            f"variance_{slug}",
        )
        stab_stems[env] = F.stability(env, curves, stab, algos, colours, figs, f"stability_{slug}")
        cost_stems[env] = F.compute(env, cost, final, algos, colours, figs, f"compute_{slug}")
    F.group_size(group, sweep.envs, colours, figs)
    F.reward_hacking(
        points, curves["textgen/proxy_reward"], curves["textgen/gold_reward"], hack, sweep.envs, algos, colours, figs
    )
    F.aggregates(agg, algos, colours, figs, tasks)
    F.improvement(poi, colours, figs, tasks)
    F.profiles(prof, algos, colours, figs, tasks)

    # ---- sections
    done = sweep.done
    S_ = {a: Section(a, t) for a, t in SECTIONS}
    n_cells = len(sweep.envs) * len(sweep.algos) * len(sweep.seeds)
    S_["overview"].text(
        f"Sweep `{out}`: {len(sweep.envs)} env(s) × {len(sweep.algos)} algorithm column(s) × "
        f"{len(sweep.seeds)} seed(s) = {n_cells} cells; {len(sweep.runs)} run directories, {len(done)} finished "
        f"training, {int((sweep.runs.status == 'ok').sum())} ok, {len(failed)} not ok, {len(missing)} cell(s) without "
        f"a finished run.\n\n"
        f"- envs: {', '.join(sweep.envs)}\n- algorithms: {', '.join(sweep.algos)}\n"
        f"- seeds: {', '.join(map(str, sweep.seeds))}\n- bootstrap: {T.REPS} stratified resamples, seed {seed}"
    )
    verdicts = pd.DataFrame(
        [
            {
                "claim": c.id,
                "statement": c.statement,
                "verdict": c.verdict,
                "reason (if inconclusive)": c.reason if c.verdict == C.INCONCLUSIVE else "",
            }
            for c in claims
        ]
    )
    S_["overview"].table(verdicts, "Claims at a glance")

    cs = S_["claims"]
    cs.text(
        "Each claim of DESIGN.md §1 is measured below. A **test** row is part of the claim: it is supported "
        "when its 95% interval excludes *no effect* in the claimed direction, contradicted when it excludes it "
        "in the other direction, else inconclusive. The claim is supported if every test is, contradicted if "
        "any is, else inconclusive. **context** rows are shown for reading, not voted. Effects are ratios or "
        "differences of IQMs (or means/stds where named) over per-run values; intervals come from a "
        "bootstrap that resamples runs within each env (and group size), seeded."
    )
    for c in claims:
        body = f"**{c.id} — {c.verdict}.** {c.statement}\n\nMeasured by: {c.measured_by}."
        if c.reason:
            body += f"\n\nNote: {c.reason}."
        cs.text(body).table(_display_claim(c))

    S_["returns"].text(
        "Final return = mean evaluation return after training (fixed evaluation seeds). AUC = area "
        "under the evaluation curve divided by its env-step range (the curve's average height). IQM "
        "with 95% stratified bootstrap CI over seeds; n / runs = finished / run directories. "
        "'missing' marks a cell with no finished run."
    )
    S_["returns"].table(_display_final(final), "Final evaluation return per env × algorithm")
    S_["curves"].figure(
        "learning_curves",
        "Evaluation return vs env steps: held-out seeds, deterministic actions (TextGen: sampled answers to "
        "held-out prompts, scored by the reward the learner is paid), before training and at the same fractions "
        "of every run's budget; IQM over seeds with its 95% bootstrap band.",
    )

    S_["variance"].text(
        "Gradient noise: policy-loss gradients of K disjoint minibatches of the same batch before "
        "the update's first optimizer step. Cosine = mean pairwise cosine (higher = less noise); "
        "relative variance = E‖g_k − ḡ‖² / ‖ḡ‖² (lower = less noise); noise scale = Σ tr(Σ) / Σ |G|² over the "
        "run, McCandlish et al.'s (2018) unbiased estimate from the minibatch and full-batch gradients, which does "
        "not depend on batch size, so it compares algorithms whose batches differ. Per run: relative variance as "
        "a median over updates, cosine as a mean."
    )
    S_["variance"].table(
        _display_cells(
            var,
            {
                "grad_rel_var_iqm": "grad rel. variance",
                "grad_noise_scale_iqm": "grad noise scale",
                "grad_cosine_iqm": "grad cosine",
                "adv_std_iqm": "advantage std",
            },
            {"final_return_seed_std": "across-seed std of final return"},
        )
    )
    for env, stem in var_stems.items():
        S_["variance"].figure(
            stem, f"{env}: gradient cosine and relative variance over training; final return per seed (box: quartiles)."
        )

    S_["stability"].text(
        "Approx KL(π_old‖π_new) (k3), clip fraction, entropy and KL to the frozen reference: "
        "per-run means over updates. Drawdown = largest drop from the running best of the "
        "evaluation curve as a fraction of its range; collapse = final return below half the "
        "run's best; divergence = run stopped on NaN/inf."
    )
    S_["stability"].table(
        _display_cells(
            stab,
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
    for env, stem in stab_stems.items():
        S_["stability"].figure(stem, f"{env}: per-update stability metrics and per-algorithm drawdown / collapse.")

    S_["compute"].text(
        "Runtime table in the style of openrlbenchmark: means over finished seeds. FLOPs per update "
        "from PyTorch's flop counter; peak memory = peak resident set size of the worker process."
    )
    S_["compute"].table(_display_compute(cost), "Compute cost per env × algorithm")
    for env, stem in cost_stems.items():
        S_["compute"].figure(
            stem,
            f"{env}: wall time split, FLOPs per update, parameters, and final return vs wall "
            "time with the Pareto front.",
        )

    gs = S_["group"]
    if group.empty or group.group_size.notna().sum() == 0:
        gs.text("No GRPO (group-advantage) runs in this sweep.")
    else:
        gs.table(_display_group(group), "GRPO by group size G (ppo as reference)")
    gs.figure(
        "group_size",
        "GRPO group size G against final return, gradient noise, env steps per update and wall time; dashed line: ppo.",
    )

    hs = S_["hacking"]
    if hack.empty:
        hs.text("No TextGen runs in this sweep: reward hacking (C4) was not measured.")
    else:
        hs.text(
            "Proxy = reward the learner sees; gold = hidden true reward; gap = proxy − gold at the end of "
            "training; d = √KL to the reference. The Gao et al. (2022) RL form R(d) = d(α − β log d) is fitted by "
            "least squares to the gold gain over the reference, pooled over seeds; d_peak = e^(α/β − 1)."
        )
        hs.table(hack.assign(**{c: hack[c].map(fmt) for c in hack.columns if c not in ("env", "algo", "n")}))
    hs.figure("reward_hacking", "Proxy and gold reward vs env steps, and gold gain vs d = √KL with the RL-form fit.")

    ag = S_["aggregates"]
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

    fs = S_["failures"]
    fs.table(failed.assign(seed=failed.seed.astype(str)), "Runs that are not ok (status and reason)")
    fs.table(
        missing.assign(seed=missing.seed.astype(str)), "Cells of the env × algorithm × seed grid without a finished run"
    )

    S_["methods"].text(
        "Statistics after Agarwal et al. (2021): interquartile mean (IQM) across seeds, percentile intervals of a "
        f"stratified bootstrap ({T.REPS} resamples, seeded), probability of improvement (Mann–Whitney), "
        "performance profiles. An interval needs at least 2 finished seeds. Tables in `tables/` hold the raw numbers "
        "(6 significant digits); `per_run.csv` has every per-run quantity the report aggregates."
    )

    sections = [S_[a] for a, _ in SECTIONS]
    title = f"rlbench report: {out.name}"
    _write_md(report / "report.md", title, sections)
    _write_html(report / "report.html", title, sections, figs)
    return report
