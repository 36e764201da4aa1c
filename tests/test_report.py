"""The report: files and sections from a real smoke sweep, deterministic tables, clear errors, partial sweeps,
and claim verdicts that follow the data (synthetic per-run tables where a claim is true or false)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlbench.reports import claims as C
from rlbench.reports import tables as T
from rlbench.reports.render import SECTIONS, ReportError, render_report

ALGOS = ("pg", "critic", "ppo", "ppo_kl", "grpo-g2", "grpo-g4")
TABLES = (
    "per_run",
    "final_returns",
    "variance",
    "stability",
    "compute_cost",
    "group_size",
    "failed_runs",
    "missing_cells",
    "normalization",
    "aggregates",
    "probability_of_improvement",
    "performance_profile",
    "reward_hacking",
    "claims",
)
FIGURES = (
    "learning_curves",
    "variance_CartPole-v1",
    "stability_CartPole-v1",
    "compute_CartPole-v1",
    "group_size",
    "reward_hacking",
    "aggregates",
    "improvement",
    "profiles",
)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory) -> Path:
    """A real smoke sweep (CartPole, 6 algorithm columns × 2 seeds), made once per session."""
    out = tmp_path_factory.mktemp("sweep") / "smoke"
    subprocess.run(
        [
            "rlbench",
            "run",
            "--preset",
            "smoke",
            "--seeds",
            "2",
            "--envs",
            "CartPole-v1",
            "--algos",
            "pg,critic,ppo,ppo_kl,grpo",
            "--group-sizes",
            "2,4",
            "--steps",
            "1500",
            "--out",
            str(out),
            "--jobs",
            "2",
        ],
        check=True,
        capture_output=True,
        timeout=1800,  # a safety net against a stuck sweep, not a speed requirement
    )
    return out


@pytest.fixture(scope="session")
def rendered(smoke) -> Path:
    return render_report(smoke, seed=0)


def test_report_has_every_figure_table_and_section(rendered: Path) -> None:
    assert rendered.name == "report"
    for stem in FIGURES:
        for ext in ("png", "svg"):
            assert (rendered / "figures" / f"{stem}.{ext}").stat().st_size > 1000, f"{stem}.{ext}"
    for name in TABLES:
        assert (rendered / "tables" / f"{name}.csv").is_file(), name
    text = (rendered / "report.html").read_text()
    md = (rendered / "report.md").read_text()
    for anchor, title in SECTIONS:
        assert f'id="{anchor}"' in text and f"<h2>{title}</h2>" in text, title
        assert f"## {title}" in md
    assert text.count("data:image/png;base64,") >= len(FIGURES)
    assert 'src="figures/' not in text, "the HTML must be self-contained"
    final = pd.read_csv(rendered / "tables" / "final_returns.csv")
    assert list(final.algo) == list(ALGOS) and (final.n == 2).all()
    claims = pd.read_csv(rendered / "tables" / "claims.csv")
    assert set(claims.claim) == {"C1", "C2", "C3", "C4", "C5"}
    assert set(claims.verdict) <= {C.SUPPORTED, C.CONTRADICTED, C.INCONCLUSIVE}
    assert (claims[claims.claim == "C4"].claim_verdict == C.INCONCLUSIVE).all()  # no TextGen in the sweep
    cost = pd.read_csv(rendered / "tables" / "compute_cost.csv")
    for col in ("env_steps_per_s", "wall_time_s", "flops_per_update", "params_policy", "peak_rss_mb"):
        assert cost[col].notna().all(), col


def test_tables_are_byte_identical_on_rerender(smoke: Path, rendered: Path) -> None:
    first = {p.name: p.read_bytes() for p in sorted((rendered / "tables").glob("*.csv"))}
    render_report(smoke, seed=0)
    second = {p.name: p.read_bytes() for p in sorted((rendered / "tables").glob("*.csv"))}
    assert first == second


def test_missing_or_empty_directory_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no such directory"):
        render_report(tmp_path / "nope")
    with pytest.raises(ReportError, match="no runs"):
        render_report(tmp_path)
    assert issubclass(ReportError, ValueError)


def _fake_textgen(run_dir: Path, dest: Path, hack: float) -> None:
    """Copy a CartPole run as a TextGen run with synthetic proxy/gold metrics (`hack` = how fast gold falls)."""
    shutil.copytree(run_dir, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["env_id"] = "rlbench/TextGen-v0"
    (dest / "config.json").write_text(json.dumps(cfg))
    m = pd.read_parquet(dest / "metrics.parquet")
    kl = np.linspace(0.0, 4.0 * hack, len(m))
    d = np.sqrt(kl)
    m["textgen/sqrt_kl"] = d
    m["textgen/kl_ref_seq"] = kl
    m["textgen/gold_reward"] = 0.5 + d * (0.3 - 0.2 * np.log(np.maximum(d, 1e-9)))
    m["textgen/proxy_reward"] = 0.5 + 0.4 * d
    m["textgen/gap"] = m["textgen/proxy_reward"] - m["textgen/gold_reward"]
    m.to_parquet(dest / "metrics.parquet", index=False)


def test_partial_sweep_marks_missing_and_failed_runs(smoke: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial"
    shutil.copytree(smoke, out, ignore=shutil.ignore_patterns("report"))
    # One run never finished, one failed with a reason, one algorithm absent from an env entirely.
    (out / "CartPole-v1" / "ppo" / "seed1" / "summary.json").unlink()
    failed = out / "CartPole-v1" / "critic" / "seed0"
    (failed / "summary.json").unlink()
    (failed / "failure.json").write_text(json.dumps({"status": "failed", "reason": "worker died <OOM & co>"}))
    for algo, seed, hack in (("ppo", 0, 1.0), ("ppo_kl", 0, 0.1), ("ppo_kl", 1, 0.12)):
        _fake_textgen(
            smoke / "CartPole-v1" / algo / f"seed{seed}", out / "rlbench__TextGen-v0" / algo / f"seed{seed}", hack
        )
    report = render_report(out)
    final = pd.read_csv(report / "tables" / "final_returns.csv")
    cell = final.set_index(["env", "algo"])
    assert cell.loc[("CartPole-v1", "ppo"), "cell"] == "partial"
    assert cell.loc[("rlbench/TextGen-v0", "pg"), "cell"] == "missing"
    failed_runs = pd.read_csv(report / "tables" / "failed_runs.csv")
    assert "worker died <OOM & co>" in set(failed_runs.reason)
    assert "unfinished" in set(failed_runs.status)
    html_text = (report / "report.html").read_text()
    assert "worker died &lt;OOM &amp; co&gt;" in html_text and "<OOM" not in html_text
    assert "missing" in (report / "report.md").read_text()
    hack = pd.read_csv(report / "tables" / "reward_hacking.csv")
    assert set(hack.algo) == {"ppo", "ppo_kl"}
    assert hack.fit_alpha.to_numpy() == pytest.approx([0.3, 0.3], abs=1e-6)
    assert hack.fit_beta.to_numpy() == pytest.approx([0.2, 0.2], abs=1e-6)
    claims = pd.read_csv(report / "tables" / "claims.csv")
    c4 = claims[(claims.claim == "C4") & (claims.role == "test")].iloc[0]
    assert c4.n_x == 2 and c4.n_y == 1 and c4.verdict == C.INCONCLUSIVE  # 1 ppo seed: no interval


# ----------------------------------------------------------------------------------------------------------
# Claims on synthetic per-run tables


def synthetic_runs(rng: np.random.Generator, **scale: float) -> pd.DataFrame:
    """Per-run table for 2 envs × 8 algorithm columns × 5 seeds; `scale` multiplies an algo's gradient noise."""
    rows = []
    for env in ("CartPole-v1", "Acrobot-v1"):
        for algo, g in (
            ("pg", None),
            ("critic", None),
            ("ppo", None),
            ("ppo_kl", None),
            ("grpo-g2", 2),
            ("grpo-g4", 4),
            ("grpo-g8", 8),
            ("grpo-g16", 16),
        ):
            for seed in range(5):
                noise = np.exp(rng.normal(0, 0.05))
                rows.append(
                    {
                        "env": env,
                        "algo": algo,
                        "seed": seed,
                        "group_size": float(g) if g else np.nan,
                        "grad_rel_var": scale.get(algo, 1.0) * (8.0 / g if g else 4.0) * noise,
                        "grad_noise_scale": scale.get(algo, 1.0) * 100.0 * noise,
                        "grad_cosine": 0.2 * noise,
                        "adv_std": noise,
                        "approx_kl": (0.01 if algo.startswith(("ppo", "grpo")) else 0.001) * noise,
                        "clip_fraction": 0.02 * noise,
                        "drawdown": 0.1 * noise,
                        "collapsed": 0.0,
                        "final_return": 400 * noise,
                        "auc": 300 * noise,
                        "update_flops_per_env_step": (1e5 if g else 3e5) * noise,
                        "params_total": 4610.0 if g else 9155.0,
                        "peak_rss_mb": 340 * noise,
                        "wall_time_s": 5 * noise,
                        "env_steps_per_update": (200.0 * g if g else 512.0) * noise,
                    }
                )
    return pd.DataFrame(rows)


def verdicts(runs: pd.DataFrame) -> dict[str, str]:
    return {c.id: c.verdict for c in C.evaluate_claims(runs, seed=0)}


def test_claim_verdicts_follow_the_data() -> None:
    rng = np.random.default_rng(0)
    # pg noisy, critic quieter than pg, ppo's KL small: C1, C2 supported; C3 contradicted (ppo's KL is larger).
    base = verdicts(synthetic_runs(rng, pg=3.0, critic=0.5))
    assert base["C1"] == C.SUPPORTED and base["C2"] == C.SUPPORTED and base["C5"] == C.SUPPORTED
    assert base["C3"] == C.CONTRADICTED
    assert base["C4"] == C.INCONCLUSIVE
    # C1 false: pg has the least gradient noise, so the verdict flips.
    flipped = verdicts(synthetic_runs(rng, pg=0.1, critic=0.5))
    assert flipped["C1"] == C.CONTRADICTED
    # C2 false: the critic is noisier than pg.
    assert verdicts(synthetic_runs(rng, pg=1.0, critic=3.0))["C2"] == C.CONTRADICTED
    # C3 true: make ppo's per-update KL and drawdown smaller than critic's.
    runs = synthetic_runs(rng, pg=3.0, critic=0.5)
    runs.loc[runs.algo == "ppo", ["approx_kl", "drawdown"]] *= 0.01
    assert verdicts(runs)["C3"] == C.SUPPORTED
    # C5 false in its variance part: noise grows with G.
    runs = synthetic_runs(rng)
    grp = runs.group_size.notna()
    runs.loc[grp, "grad_rel_var"] = runs.loc[grp, "group_size"] * np.exp(rng.normal(0, 0.05, grp.sum()))
    assert verdicts(runs)["C5"] == C.CONTRADICTED


def test_claim_c3_uses_the_no_clip_ablation_when_the_sweep_has_it() -> None:
    rng = np.random.default_rng(1)
    runs = synthetic_runs(rng, pg=3.0, critic=0.5)  # ppo's KL is larger than critic's: contradicted vs critic
    noclip = runs[runs.algo == "ppo"].assign(algo="ppo_noclip")
    noclip[["approx_kl", "drawdown"]] *= 10.0  # without the clip, updates are 10x larger and less stable
    with_ablation = pd.concat([runs, noclip], ignore_index=True)
    claim = next(c for c in C.evaluate_claims(with_ablation, seed=0) if c.id == "C3")
    assert claim.verdict == C.SUPPORTED
    assert [r.comparison for r in claim.rows if r.role == "test"] == ["ppo vs ppo_noclip"] * 2
    noclip[["approx_kl", "drawdown"]] /= 100.0  # the clip made updates larger: the verdict flips
    assert verdicts(pd.concat([runs, noclip], ignore_index=True))["C3"] == C.CONTRADICTED


def test_claim_c4_from_textgen_runs_and_missing_data() -> None:
    rows = []
    for algo, gap in (("ppo", 0.6), ("ppo_kl", 0.1)):
        for seed in range(4):
            rows.append(
                {
                    "env": "rlbench/TextGen-v0",
                    "algo": algo,
                    "seed": seed,
                    "group_size": np.nan,
                    "gap": gap + 0.01 * seed,
                    "gold": 0.8 - gap,
                    "proxy": 0.8,
                    "kl_to_ref": 10 * gap,
                }
            )
    runs = pd.DataFrame(rows)
    assert verdicts(runs)["C4"] == C.SUPPORTED
    swapped = runs.assign(algo=runs.algo.map({"ppo": "ppo_kl", "ppo_kl": "ppo"}))
    assert verdicts(swapped)["C4"] == C.CONTRADICTED
    claims = C.evaluate_claims(runs[runs.algo == "ppo"], seed=0)
    c4 = next(c for c in claims if c.id == "C4")
    assert c4.verdict == C.INCONCLUSIVE and "no finished runs" in c4.reason
    c1 = claims[0]
    assert c1.verdict == C.INCONCLUSIVE and c1.reason


def test_verdict_rule_and_effect_intervals() -> None:
    assert C.verdict(1.2, 2.0, 1.0, +1) == C.SUPPORTED
    assert C.verdict(1.2, 2.0, 1.0, -1) == C.CONTRADICTED
    assert C.verdict(0.9, 2.0, 1.0, +1) == C.INCONCLUSIVE
    assert C.verdict(np.nan, np.nan, 1.0, +1) == C.INCONCLUSIVE
    x, y = [np.array([4.0, 4.0, 4.0])], [np.array([2.0, 2.0])]
    assert tuple(C.two_group_effect(x, y, "ratio")) == (2.0, 2.0, 2.0)
    assert tuple(C.two_group_effect(x, y, "diff", "mean")) == (2.0, 2.0, 2.0)
    assert np.isnan(C.two_group_effect(x, [np.array([2.0])]).low)
    # value = G^-1 exactly: halves per doubling of G.
    g = [np.repeat([2.0, 4.0, 8.0], 3)]
    assert tuple(C.doubling_factor(g, [1.0 / g[0]])) == pytest.approx((0.5, 0.5, 0.5))


def test_rl_form_fit_and_run_measures() -> None:
    d = np.linspace(0.05, 3.0, 30)
    alpha, beta = T.fit_rl_form(d, d * (0.7 - 0.25 * np.log(d)))
    assert (alpha, beta) == pytest.approx((0.7, 0.25))
    assert np.isnan(T.fit_rl_form([0.0, 1.0], [0.0, 1.0])[0])
    assert T.drawdown([0, 10, 5, 10]) == pytest.approx(0.5)
    assert T.drawdown([3, 3, 3]) == 0.0
    assert T.collapsed(40.0, [10, 100, 40]) == 1.0 and T.collapsed(60.0, [10, 100, 60]) == 0.0
    assert T.collapsed(-400.0, [-500, -100, -400]) == 1.0
