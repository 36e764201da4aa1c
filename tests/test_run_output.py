"""What `rlbench run` prints when not on a terminal, its end-of-run summary, byte-identical re-renders of the
report, and an ablation's own column name, on one small smoke sweep run as a subprocess (stdout is a pipe, as
in CI)."""

import filecmp
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from runargs import run_args

from rlbench.display import claim_verdicts

ROOT = Path(__file__).resolve().parents[1]
ENVS = ("CartPole-v1", "rlbench/TextGen-v0")
ALGOS = ("pg", "ppo", "ppo[clip=none]")
RUNS = len(ENVS) * len(ALGOS) * 2
SEEDS = (0, 1)
SWEEP = {"algos": ",".join(ALGOS), "envs": ",".join(ENVS), "seeds": len(SEEDS), "jobs": 2}


def rlbench(*args: str) -> str:
    """Run the CLI in a subprocess from the repository root; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "rlbench.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, str]:
    """A fresh smoke sweep without a report: (directory, stdout)."""
    out = tmp_path_factory.mktemp("ux") / "sweep"
    return out, rlbench(*run_args(out, **SWEEP))


@pytest.fixture(scope="module")
def reported(sweep) -> tuple[str, Path]:
    """The same command again (every run skipped) with the report: (stdout, a copy of the rendered report)."""
    out, _ = sweep
    stdout = rlbench(*run_args(out, report=True, **SWEEP))
    first = out.parent / "first-render"
    shutil.copytree(out / "report", first)
    return stdout, first


def test_one_plain_line_per_finished_run(sweep) -> None:
    _, stdout = sweep
    eta = r"\(ETA \d+:\d\d:\d\d\)"
    line = re.compile(rf"^\[(\d+)/{RUNS}\] ok (\S+) (\S+) seed (\d+): final return -?[\d.]+, [\d.]+ s {eta}$")
    matches = [m for m in map(line.match, stdout.splitlines()) if m]
    assert sorted(int(m[1]) for m in matches) == list(range(1, RUNS + 1))
    assert {(m[2], m[3], int(m[4])) for m in matches} == {(e, a, s) for e in ENVS for a in ALGOS for s in SEEDS}
    progress = stdout.split("(mean ± std over seeds)")[0]
    assert "━" not in progress and "-:--:--" not in progress  # no progress bar drawn into logs


def test_summary_has_textgen_gold_to_3_digits_and_total_time(sweep) -> None:
    out, stdout = sweep
    evals = [pd.read_parquet(p).iloc[-1] for p in sorted((out / "rlbench__TextGen-v0" / "ppo").glob("*/evals.parquet"))]
    gold = sum(e["eval/gold_mean"] for e in evals) / len(evals)
    row = re.search(r"│ ppo\s+│ 2 │ (\d\.\d{3}) ± \d\.\d{3} │ (\d\.\d{3}) ± \d\.\d{3} │ (-?\d\.\d{3}) ±", stdout)
    assert row, stdout
    assert row[1] == f"{gold:.3f}"
    assert re.search(rf"^total wall time \d+:\d\d:\d\d for {RUNS} run\(s\); no report \(--no-report\)$", stdout, re.M)
    assert "claims" not in stdout


def test_summary_shows_claim_verdicts_when_the_report_is_rendered(sweep, reported) -> None:
    out, _ = sweep
    stdout, _ = reported
    verdicts = claim_verdicts(out / "report" / "tables" / "claims.csv")
    assert verdicts
    for claim, verdict in verdicts.items():
        assert re.search(rf"^  {re.escape(claim)}  {re.escape(verdict)}$", stdout, re.M), stdout
    assert re.search(rf"total wall time \d+:\d\d:\d\d for {RUNS} run\(s\); report: .*report\.html$", stdout, re.M)


def test_report_rerenders_byte_identical(sweep, reported) -> None:
    out, _ = sweep
    _, first = reported
    rlbench("report", str(out))
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert {p.relative_to(out / "report") for p in (out / "report").rglob("*") if p.is_file()} == set(files)
    assert any(p.name.startswith("variance_") for p in files)
    _, mismatch, errors = filecmp.cmpfiles(first, out / "report", [str(p) for p in files], shallow=False)
    assert not mismatch and not errors


def test_metric_names_in_the_docs_are_what_runs_record(sweep) -> None:
    """docs/claims-and-metrics.md names real columns: every `prefix/name` and summary field it cites exists."""
    out, _ = sweep
    doc = (ROOT / "docs" / "claims-and-metrics.md").read_text()
    run = out / "rlbench__TextGen-v0" / "ppo" / "seed0"
    recorded = set(pd.read_parquet(run / "metrics.parquet").columns) | set(pd.read_parquet(run / "evals.parquet"))
    recorded |= set(json.loads((run / "summary.json").read_text()))
    cited = set(re.findall(r"`((?:train|eval|rollout|time)/\w+)`", doc))
    cited |= set(re.findall(r"`(final_return|grad_noise_scale|peak_rss_mb)`", doc))
    assert len(cited) >= 15 and cited <= recorded, cited - recorded
    assert all(f"**C{i}**" in doc for i in range(1, 6))


def test_an_ablation_is_its_own_column_everywhere(sweep, reported) -> None:
    """`ppo[clip=none]` beside `ppo`: its own run directories, config, table rows and report rows; the claims
    engine (which compares `ppo` with `ppo_noclip`) never takes it for `ppo`."""
    out, stdout = sweep
    for env in ("CartPole-v1", "rlbench__TextGen-v0"):
        config = json.loads((out / env / "ppo[clip=none]" / "seed0" / "config.json").read_text())
        assert config["algo"]["name"] == "ppo[clip=none]" and config["algo"]["clip"] is None
        assert json.loads((out / env / "ppo" / "seed0" / "config.json").read_text())["algo"]["clip"] == 0.2
    assert re.search(r"│ ppo\[clip=none\]\s+│ 2 │", stdout)
    tables = out / "report" / "tables"
    per_run = pd.read_csv(tables / "per_run.csv")
    assert per_run.groupby("algo").size().to_dict() == {a: 4 for a in ALGOS}
    claims = pd.read_csv(tables / "claims.csv")
    assert not claims[["column_a", "column_b"]].isin(["ppo[clip=none]"]).any().any()
    assert "ppo[clip=none]" in (out / "report" / "report.md").read_text()
