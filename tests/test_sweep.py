"""Sweeps: identical metrics whatever --jobs is and after an interrupted sweep is resumed."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

MATRIX = [
    "--algos",
    "pg,critic,ppo,ppo_kl,grpo",
    "--group-sizes",
    "4",
    "--envs",
    "CartPole-v1,Pendulum-v1",
    "--seed-list",
    "3",
    "--steps",
    "2000",
    "--preset",
    "smoke",
]


def rlbench(*args: str, **kwargs) -> subprocess.Popen:
    """`rlbench run` of MATRIX, with Ctrl-C's default meaning even when the suite itself was started in the
    background (a non-interactive shell starts background jobs with SIGINT ignored, and children inherit that)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rlbench.cli", "run", *MATRIX, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def numeric_results(out: Path) -> dict[str, pd.DataFrame]:
    """Every run's metrics and evals without wall-clock columns, keyed by run path."""
    frames = {}
    for path in sorted(out.glob("**/*.parquet")):
        df = pd.read_parquet(path)
        frames[str(path.relative_to(out))] = df[[c for c in df.columns if not c.startswith("time/")]]
    return frames


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("jobs1")
    proc = rlbench("--jobs", "1", "--out", str(out))
    assert proc.wait() == 0, proc.stdout.read()
    frames = numeric_results(out)
    assert len(frames) == 2 * 2 * 5  # metrics + evals for 2 envs × 5 algorithms
    return frames


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key], check_exact=True, obj=key)


def test_jobs_do_not_change_results(tmp_path, reference):
    proc = rlbench("--jobs", "2", "--out", str(tmp_path))
    assert proc.wait() == 0, proc.stdout.read()
    assert_same(reference, numeric_results(tmp_path))


def test_interrupted_sweep_resumes_to_the_same_results(tmp_path, reference):
    proc = rlbench("--jobs", "1", "--out", str(tmp_path))
    while not list(tmp_path.glob("**/summary.json")):  # interrupt right after the first run finishes
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=600)  # a safety net against a stuck sweep, not a speed requirement
    finished = {p: p.stat().st_mtime_ns for p in tmp_path.glob("**/summary.json")}
    assert 1 <= len(finished) < 10, "the interrupt should land mid-sweep"
    assert not list(tmp_path.glob("**/.*.tmp")), "no half-written file may remain"

    proc = rlbench("--jobs", "2", "--out", str(tmp_path))
    output, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, output
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "finished runs must not be redone"
    assert_same(reference, numeric_results(tmp_path))


def test_ray_executor_gives_the_same_results(tmp_path, reference):
    pytest.importorskip("ray")
    proc = rlbench("--executor", "ray", "--out", str(tmp_path))
    assert proc.wait() == 0, proc.stdout.read()
    assert_same(reference, numeric_results(tmp_path))
