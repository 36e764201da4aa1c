"""The Python API: `rlbench.run` on a smoke matrix gives the DataFrames of what the CLI's run of the same matrix
stored; it resumes like the CLI; bad input is a ValueError subclass naming the bad value, with nothing written."""

import json
from pathlib import Path

import pandas as pd
import pytest
from runargs import run_args
from typer.testing import CliRunner

import rlbench
from rlbench.cli import app
from rlbench.matrix import MatrixError
from rlbench.reports.claims import ROW_COLUMNS
from rlbench.store import SweepError

MATRIX = {"algos": "pg", "envs": "CartPole-v1", "seeds": 2, "jobs": 2}
KEY = ["env", "algo", "seed"]


def measures_time(column: str) -> bool:
    """Wall-clock and machine-dependent measurements, which differ between two runs of the same config."""
    return column.startswith("time/") or column.endswith(("_s", "_per_s")) or column == "peak_rss_mb"


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[rlbench.SweepResults, Path]:
    """(the API's sweep of MATRIX, the directory the CLI's run of MATRIX wrote)."""
    root = tmp_path_factory.mktemp("api")
    result = CliRunner().invoke(app, run_args(root / "cli", **MATRIX))
    assert result.exit_code == 0, result.output
    return rlbench.run(preset="smoke", out=root / "api", report=False, **MATRIX), root / "cli"


def stored(out: Path, name: str) -> pd.DataFrame:
    """Every run's `name` parquet file under `out`, read directly, with env, algo, seed from its config.json."""
    frames = []
    for path in sorted(out.glob(f"*/*/seed*/{name}")):
        config = json.loads((path.parent / "config.json").read_text())
        frame = pd.read_parquet(path)
        for i, (column, value) in enumerate(zip(KEY, (config["env_id"], config["algo"]["name"], config["seed"]))):
            frame.insert(i, column, value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    kept = [c for c in frame.columns if not measures_time(c) and c != "run_dir"]
    return frame[kept].sort_values([c for c in (*KEY, "update") if c in kept]).reset_index(drop=True)


@pytest.mark.parametrize("name", ["metrics", "evals"])
def test_per_update_frames_equal_what_the_cli_stored(sweeps, name) -> None:
    sweep, cli_out = sweeps
    frame = getattr(sweep, name)()
    files = stored(cli_out, f"{name}.parquet")
    assert list(frame.columns) == list(files.columns)
    assert dict(frame.dtypes) == dict(files.dtypes)
    assert len(frame) == len(files) > 0
    assert sorted(set(zip(frame.env, frame.algo, frame.seed))) == [("CartPole-v1", "pg", 0), ("CartPole-v1", "pg", 1)]
    pd.testing.assert_frame_equal(comparable(frame), comparable(files))


def test_runs_frame_holds_each_planned_run_with_its_config_and_summary(sweeps) -> None:
    sweep, cli_out = sweeps
    runs = sweep.runs()
    from_cli = rlbench.load(cli_out).runs()
    assert list(runs.columns) == list(from_cli.columns)
    assert dict(runs.dtypes) == dict(from_cli.dtypes)
    assert len(runs) == 2 and list(runs.status) == ["ok", "ok"]
    pd.testing.assert_frame_equal(comparable(runs), comparable(from_cli))
    for row in from_cli.itertuples():
        run_dir = cli_out / "CartPole-v1" / "pg" / f"seed{row.seed}"
        summary = json.loads((run_dir / "summary.json").read_text())
        algo = json.loads((run_dir / "config.json").read_text())["algo"]
        record = from_cli.iloc[row.Index]
        assert all(record[k] == v for k, v in summary.items() if not measures_time(k))
        assert all(record[k] == v for k, v in algo.items() if k != "name")
        assert record["steps"] == summary["env_steps"]


def test_claims_frame_is_the_report_claims_table(sweeps) -> None:
    sweep, cli_out = sweeps
    claims = sweep.claims()
    assert list(claims.columns) == list(ROW_COLUMNS) and len(claims) > 0
    pd.testing.assert_frame_equal(claims, rlbench.load(cli_out).claims())


def test_run_resumes_like_the_cli(sweeps) -> None:
    _, cli_out = sweeps
    before = {p: p.read_bytes() for p in cli_out.glob("**/summary.json")}
    again = rlbench.run(preset="smoke", out=cli_out, report=False, **MATRIX)
    assert len(again.runs()) == 2
    assert {p: p.read_bytes() for p in cli_out.glob("**/summary.json")} == before


def test_bad_algorithm_is_a_value_error_naming_it(tmp_path) -> None:
    out = tmp_path / "sweep"
    with pytest.raises(MatrixError, match="a2c") as raised:
        rlbench.run(algos=["ppo", "a2c"], envs=["CartPole-v1"], seeds=1, preset="smoke", out=out, report=False)
    assert isinstance(raised.value, ValueError) and "allowed" in str(raised.value)
    assert not out.exists()


def test_runs_of_another_config_are_a_value_error(sweeps) -> None:
    _, cli_out = sweeps
    with pytest.raises(SweepError, match="different config") as raised:
        rlbench.run(preset="smoke", out=cli_out, report=False, steps=400, **MATRIX)
    assert isinstance(raised.value, ValueError)


def test_load_of_a_directory_without_a_plan_is_a_value_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such directory"):
        rlbench.load(tmp_path / "nowhere")
