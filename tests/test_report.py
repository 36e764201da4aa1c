"""The report: files and sections from a real smoke sweep, deterministic tables, clear errors, partial sweeps,
and claim verdicts that follow the data (synthetic per-run tables where a claim is true or false)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runargs import run_args

from rlbench.reports import claims as C
from rlbench.reports import tables as T
from rlbench.reports.render import SECTIONS, ReportError, render_report
from rlbench.spec import RunSpec

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
            sys.executable,
            "-m",
            "rlbench.cli",
            *run_args(
                out,
                seeds=2,
                envs="CartPole-v1",
                algos="pg,critic,ppo,ppo_kl,grpo",
                group_sizes="2,4",
                steps=1500,
                jobs=2,
            ),
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
    assert set(claims.verdict.fillna("")) <= {*C.VERDICTS, ""}
    assert not (claims.claim == "C4").any() or (claims[claims.claim == "C4"].n_a == 0).all()  # no TextGen
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
    with pytest.raises(ReportError, match="no runs .* no sweep.json"):
        render_report(tmp_path)
    assert issubclass(ReportError, ValueError)


def _fake_textgen(run_dir: Path, dest: Path, hack: float) -> None:
    """Copy a CartPole run as a TextGen run with synthetic proxy/gold metrics (`hack` = how fast gold falls), and
    add it to the plan of dest's sweep."""
    shutil.copytree(run_dir, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["env_id"] = "rlbench/TextGen-v0"
    (dest / "config.json").write_text(json.dumps(cfg))
    _plan(dest.parents[2], cfg)
    m = pd.read_parquet(dest / "metrics.parquet")
    kl = np.linspace(0.0, 4.0 * hack, len(m))
    d = np.sqrt(kl)
    m["textgen/sqrt_kl"] = d
    m["textgen/kl_ref_seq"] = kl
    m["textgen/gold_reward"] = 0.5 + d * (0.3 - 0.2 * np.log(np.maximum(d, 1e-9)))
    m["textgen/proxy_reward"] = 0.5 + 0.4 * d
    m["textgen/gap"] = m["textgen/proxy_reward"] - m["textgen/gold_reward"]
    m.to_parquet(dest / "metrics.parquet", index=False)
    e = pd.read_parquet(dest / "evals.parquet")
    kl = np.linspace(0.0, 4.0 * hack, len(e))
    e["eval/kl_ref_seq"] = kl
    e["eval/gold_mean"] = 0.5 + np.sqrt(kl) * (0.3 - 0.1 * np.sqrt(kl))
    e["eval/ref_gold_mean"] = 0.5
    e["eval/proxy_mean"] = 0.5 + 0.4 * np.sqrt(kl)
    e.to_parquet(dest / "evals.parquet", index=False)


def _plan(out: Path, config: dict) -> None:
    """Add the run `config` describes to the plan (sweep.json) of the sweep in `out`."""
    plan = json.loads((out / "sweep.json").read_text())
    plan["cells"].append(RunSpec.from_dict(config).to_dict())
    (out / "sweep.json").write_text(json.dumps(plan))


def test_partial_sweep_marks_missing_and_failed_runs(smoke: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial"
    shutil.copytree(smoke, out, ignore=shutil.ignore_patterns("report"))
    # One run never finished, one failed with a reason, one never started, one algorithm absent from an env
    # entirely; one run directory is not in the plan.
    (out / "CartPole-v1" / "ppo" / "seed1" / "summary.json").unlink()
    failed = out / "CartPole-v1" / "critic" / "seed0"
    (failed / "summary.json").unlink()
    (failed / "failure.json").write_text(json.dumps({"status": "failed", "reason": "worker died <OOM & co>"}))
    shutil.rmtree(out / "CartPole-v1" / "pg" / "seed1")
    shutil.copytree(out / "CartPole-v1" / "pg" / "seed0", out / "CartPole-v1" / "pg" / "seed9")
    for algo, seed, hack in (("ppo", 0, 1.0), ("ppo_kl", 0, 0.1), ("ppo_kl", 1, 0.12)):
        _fake_textgen(
            smoke / "CartPole-v1" / algo / f"seed{seed}", out / "rlbench__TextGen-v0" / algo / f"seed{seed}", hack
        )
    report = render_report(out)
    final = pd.read_csv(report / "tables" / "final_returns.csv")
    cell = final.set_index(["env", "algo"])
    assert cell.loc[("CartPole-v1", "ppo"), "cell"] == "partial"
    assert cell.loc[("CartPole-v1", "pg"), "n"] == 1, "a run outside the plan is left out"
    assert cell.loc[("rlbench/TextGen-v0", "pg"), "cell"] == "empty"
    failed_runs = pd.read_csv(report / "tables" / "failed_runs.csv")
    assert list(failed_runs.reason) == ["worker died <OOM & co>"]
    missing = pd.read_csv(report / "tables" / "missing_cells.csv").set_index(["env", "algo", "seed"])
    assert missing.status.to_dict() == {
        ("CartPole-v1", "pg", 1): "missing",
        ("CartPole-v1", "critic", 0): "failed",
        ("CartPole-v1", "ppo", 1): "unfinished",
    }
    assert missing.loc[("CartPole-v1", "pg", 1), "reason"].startswith("never started")
    assert missing.loc[("CartPole-v1", "ppo", 1), "reason"].startswith("started but never finished")
    html_text = (report / "report.html").read_text()
    assert "worker died &lt;OOM &amp; co&gt;" in html_text and "<OOM" not in html_text
    md = (report / "report.md").read_text()
    assert "Left out, not in the plan: 1 run(s) (CartPole-v1/pg/seed9)." in md
    hack = pd.read_csv(report / "tables" / "reward_hacking.csv")
    assert set(hack.algo) == {"ppo", "ppo_kl"}
    assert hack.fit_alpha.to_numpy() == pytest.approx([0.3, 0.3], abs=1e-6)
    assert hack.fit_beta.to_numpy() == pytest.approx([0.2, 0.2], abs=1e-6)
    claims = pd.read_csv(report / "tables" / "claims.csv")
    c4 = claims[(claims.claim == "C4") & (claims.role == C.PRIMARY) & (claims.env == "rlbench/TextGen-v0")].iloc[0]
    # Side B is the ppo run of the same seed stopped at ppo_kl's final KL: only seed 0 has one.
    assert c4.n_a == 2 and c4.n_b == 1 and c4.verdict == C.SMALL_N and np.isnan(c4.ci_low)
    frontier = pd.read_csv(report / "tables" / "kl_frontier.csv").set_index("algo")
    ppo = pd.read_parquet(out / "rlbench__TextGen-v0" / "ppo" / "seed0" / "evals.parquet")
    at = np.interp(0.4, ppo["eval/kl_ref_seq"], ppo["eval/gold_mean"])  # ppo_kl seed 0 ends at KL 4 × 0.1
    assert frontier.loc["ppo_kl", "early_stop_gold"] == pytest.approx(at, rel=1e-5)
    assert list(frontier.index) == ["ppo", "ppo_kl"]  # TextGen only: CartPole has no KL to a reference


def test_rl_form_fit_and_run_measures() -> None:
    d = np.linspace(0.05, 3.0, 30)
    alpha, beta = T.fit_rl_form(d, d * (0.7 - 0.25 * np.log(d)))
    assert (alpha, beta) == pytest.approx((0.7, 0.25))
    assert np.isnan(T.fit_rl_form([0.0, 1.0], [0.0, 1.0])[0])
    assert T.drawdown([0, 10, 5, 10], 100.0) == pytest.approx(0.05)  # a fixed scale: the env's score range
    assert T.drawdown([3, 3, 3], 100.0) == 0.0 and np.isnan(T.drawdown([3], 100.0))
    assert T.score_range("CartPole-v1", [1.0]) == (22.0, 475.0, "random policy / solved threshold")
    assert T.score_range("X-v0", [2.0, 5.0])[:2] == (2.0, 5.0) and T.score_range("X-v0", [2.0])[:2] == (2.0, 3.0)
    assert T.collapsed(40.0, [10, 100, 40]) == 1.0 and T.collapsed(60.0, [10, 100, 60]) == 0.0
    assert T.collapsed(-400.0, [-500, -100, -400]) == 1.0
