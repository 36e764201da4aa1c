"""Sweeps: identical metrics whatever --jobs and the executor are, after Ctrl-C, after the driver is killed, and
after a Ray cluster loses a node; SIGTERM stops a sweep with its workers; the report of a stopped sweep lists its
unfinished planned runs as missing.

One uninterrupted sweep at --jobs 1 (with its report) is the reference every other sweep here is compared with."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from runargs import run_args
from typer.testing import CliRunner

from rlbench.cli import app

MATRIX = {
    "algos": "pg,critic,ppo,ppo_kl,grpo",
    "group_sizes": 4,
    "envs": "CartPole-v1,Pendulum-v1",
    "seed_list": 3,
    "steps": 2000,
}
RUNS = 2 * 5
"""Runs of MATRIX: 2 envs × 5 algorithm columns × 1 seed."""
SAFETY_S = 1800
"""A stuck sweep fails its test after this instead of hanging CI (not a speed requirement)."""
CLOCK_WORDS = ("time", "_per_s", "rss", "fps")
"""Report columns holding wall-clock times, speeds or memory, which differ between two runs of the same sweep."""


def rlbench(out: Path, report: bool = False, **options) -> subprocess.Popen:
    """`rlbench run` of MATRIX into `out`, with Ctrl-C's default meaning even when the suite itself was started in the
    background (a non-interactive shell starts background jobs with SIGINT ignored, and children inherit that)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rlbench.cli", *run_args(out, report=report, **MATRIX, **options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=SAFETY_S)
    return proc.returncode, output


def wait_for_finished_runs(out: Path, count: int, proc: subprocess.Popen) -> None:
    """Return once `out` holds at least `count` finished runs (the sweep must still be going)."""
    while len(list(out.glob("**/summary.json"))) < count:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)


def numeric_results(out: Path) -> dict[str, pd.DataFrame]:
    """Every run's metrics and evals without wall-clock columns, keyed by run path."""
    frames = {}
    for path in sorted(out.glob("*/*/seed*/*.parquet")):
        df = pd.read_parquet(path)
        frames[str(path.relative_to(out))] = df[[c for c in df.columns if not c.startswith("time/")]]
    return frames


def report_tables(out: Path) -> dict[str, pd.DataFrame]:
    """The report's tables without clock-dependent columns."""
    tables = {}
    for path in sorted((out / "report" / "tables").glob("*.csv")):
        df = pd.read_csv(path)
        tables[path.name] = df[[c for c in df.columns if not any(w in c for w in CLOCK_WORDS)]]
    return tables


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key], check_exact=True, obj=key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted sweep at --jobs 1, with its report."""
    out = tmp_path_factory.mktemp("reference")
    code, output = finish(rlbench(out, report=True, jobs=1))
    assert code == 0, output
    assert len(numeric_results(out)) == 2 * RUNS  # metrics + evals of every run
    return out


def test_stopped_sweeps_resume_to_the_same_results_and_report(tmp_path, reference):
    """Ctrl-C after the first finished run, then a resume at --jobs 2 whose driver is SIGKILLed: the report lists
    every planned run without a finished one as missing; the same command then resumes at --jobs 2 and gives the
    reference's metrics and report (so --jobs does not change results either)."""
    proc = rlbench(tmp_path, jobs=1)
    wait_for_finished_runs(tmp_path, 1, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=SAFETY_S)
    finished = {p: p.stat().st_mtime_ns for p in tmp_path.glob("**/summary.json")}
    assert 1 <= len(finished) < RUNS, "the interrupt should land mid-sweep"
    assert not list(tmp_path.glob("**/.*.tmp")), "no half-written file may remain"

    proc = rlbench(tmp_path, jobs=2)
    wait_for_finished_runs(tmp_path, len(finished) + 1, proc)
    proc.kill()
    proc.wait(timeout=SAFETY_S)
    done = {p.parent.relative_to(tmp_path) for p in tmp_path.glob("**/summary.json")}
    assert len(done) < RUNS, "the kill should land mid-sweep"
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    missing = pd.read_csv(tmp_path / "report" / "tables" / "missing_cells.csv")
    planned = json.loads((tmp_path / "sweep.json").read_text())["cells"]
    unfinished = {(c["env_id"], c["algo"]["name"], f"seed{c['seed']}") for c in planned} - {p.parts for p in done}
    assert {(r.env, r.algo, f"seed{r.seed}") for r in missing.itertuples()} == unfinished  # (env ids are slugs here)
    assert set(missing.status) <= {"unfinished", "missing"} and "missing" in set(missing.status)
    assert missing.reason.str.len().gt(0).all()

    code, output = finish(rlbench(tmp_path, report=True, jobs=2))
    assert code == 0, output
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "finished runs must not be redone"
    assert_same(numeric_results(reference), numeric_results(tmp_path))
    assert pd.read_csv(tmp_path / "report" / "tables" / "missing_cells.csv").empty
    assert_same(report_tables(reference), report_tables(tmp_path))


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (its workers, and the forkserver's children), from /proc."""
    parents = {int(d.name): _parent(d) for d in Path("/proc").iterdir() if d.name.isdigit()}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if alive(p)}


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not yet reaped by its new parent, does not)."""
    fields = _stat_fields(Path(f"/proc/{pid}"))
    return fields is not None and fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from Linux's /proc")
def test_sigterm_stops_the_sweep_with_its_workers_and_keeps_finished_runs(tmp_path):
    proc = rlbench(tmp_path, jobs=2)
    wait_for_finished_runs(tmp_path, 1, proc)
    workers = descendants(proc.pid)
    assert workers, "the sweep's workers should be running"
    proc.send_signal(signal.SIGTERM)
    code, _ = finish(proc)
    deadline = time.monotonic() + 60  # ample: the driver cancels its batches before it exits
    while {p for p in workers if alive(p)} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not {p for p in workers if alive(p)}, "every worker must end with the sweep"
    assert code != 0
    finished = list(tmp_path.glob("**/summary.json"))
    assert 1 <= len(finished) < RUNS and all(json.loads(p.read_text())["status"] == "ok" for p in finished)
    assert not list(tmp_path.glob("**/.*.tmp")), "no half-written file may remain"


def node_workers(node) -> dict[int, str]:
    """pid → command line of the worker processes of a Ray node (children of its raylet); Ray titles a worker
    `ray::FUNCTION` while it executes a task."""
    raylet = node.all_processes["raylet"][0].process.pid
    workers = {}
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit() and _parent(proc_dir) == raylet:
            try:
                workers[int(proc_dir.name)] = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                pass
    return workers


def wait_for_a_task_on(node, proc: subprocess.Popen) -> None:
    """Return once a worker of `node` executes a run (the sweep must still be going)."""
    while not any("train_in_worker" in cmd for cmd in node_workers(node).values()):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)


def lose_node(cluster, node) -> None:
    """What a machine's crash does to a Ray node: its raylet and every worker process on it die at once.
    (`Cluster.remove_node` alone kills the raylet, but a worker already running a task can finish it and hand
    the result to the driver before it notices.)"""
    workers = node_workers(node)
    cluster.remove_node(node, allow_graceful=False)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stat_fields(proc_dir: Path) -> list[str] | None:
    """The fields of a process's /proc stat after its command name (state, parent pid, …); None once it is gone."""
    try:
        return (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _parent(proc_dir: Path) -> int | None:
    fields = _stat_fields(proc_dir)
    return int(fields[1]) if fields else None


def test_ray_cluster_losing_a_node_fails_its_runs_and_a_resume_completes(tmp_path, reference):
    """A Ray cluster on this machine: a head node without CPUs (it only coordinates) and a worker node with one,
    joined with --ray-address; the driver writes every file itself, so nothing assumes the nodes share a
    filesystem. Once a worker of that node executes a run (the only CPU is there), the node is lost and a new
    one joins: the lost run fails with the reason, the others finish on the new node, and the same command
    completes the sweep with the reference's metrics."""
    cluster_utils = pytest.importorskip("ray.cluster_utils", reason="the Ray executor needs Ray (rlbench[ray])")
    fast_failure_detection = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
    cluster = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": fast_failure_detection},
    )
    try:
        worker = cluster.add_node(num_cpus=1)
        ray_options = {"executor": "ray", "ray_address": cluster.address}
        proc = rlbench(tmp_path, **ray_options)
        wait_for_a_task_on(worker, proc)
        lose_node(cluster, worker)
        cluster.add_node(num_cpus=1)
        code, output = finish(proc)
        assert code == 1, output
        failures = [json.loads(p.read_text()) for p in tmp_path.glob("**/failure.json")]
        assert failures, "the lost node held a run"
        for failure in failures:
            assert failure["status"] == "failed" and "died" in failure["reason"], failure
            assert set(failure) == {"status", "reason", "traceback", "exit_code"}
        assert len(list(tmp_path.glob("**/summary.json"))) + len(failures) == RUNS, output

        code, output = finish(rlbench(tmp_path, **ray_options))
        assert code == 0, output
        assert_same(numeric_results(reference), numeric_results(tmp_path))
    finally:
        cluster.shutdown()


@pytest.mark.parametrize(
    "algo, env_id",
    [
        ("grpo", "CartPole-v1"),
        ("pg", "Acrobot-v1"),
        ("ppo", "CartPole-v1"),
        ("ppo", "rlbench/TextGen-v0"),
        ("grpo", "rlbench/TextGen-v0"),
    ],
)
def test_a_spec_stored_before_n_starts_split_from_n_envs_reads_as_it_ran(algo, env_id):
    """Before n_starts, n_envs counted start states in `episodes` mode and prompts on TextGen, and no spec recorded
    a trainer: such a stored spec reads as today's resolution of the same column, so old sweeps re-render and
    resume (no conflict)."""
    from rlbench.matrix import resolve_spec
    from rlbench.store import stored_spec

    spec = resolve_spec(algo, env_id)
    old = json.loads(json.dumps(spec.to_dict()))
    counted_starts = spec.algo.collect == "episodes" or "TextGen" in env_id
    old["algo"]["n_envs"] = spec.algo.n_starts if counted_starts else spec.algo.n_envs
    del old["algo"]["n_starts"], old["algo"]["trainer"]
    assert stored_spec(old) == spec
