"""Fault injection through the real CLI: envs that raise, return NaN, kill their worker or hang, mixed with a
healthy env in one sweep. Only the faulty runs fail, each with its status and reason on disk; the sweep exits
non-zero listing every failure; re-running the same command keeps finished runs and redoes the failed ones.

No test here depends on how fast the machine is: the sweeps without a hanging env run with no time limit, and
the hanging env waits forever (after leaving a marker file that proves it got there), so only the executor's
kill ends its run; a sweep with a hanging env gets a per-run limit of HANG_LIMIT_FACTOR × the longest run of the
first sweep, measured on the machine at hand.

The faults fire at step FAULT_AT of an env instance (counted across its episodes, mid-episode), i.e. after the
pre-flight environment contract check, which steps each env a few hundred times in the CLI process, has passed:
they model faults that only show up during training, which is what run isolation is for.

(Ctrl-C and resume is tested in test_sweep.py.)"""

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from runargs import run_args

from rlbench.contract import ROLLOUT_STEPS

EPISODE = 20
"""max_episode_steps of the test envs (every episode is truncated there)."""
FAULT_STEP = 5
"""Step of the faulty episode at which the fault fires (k > 1: Gymnasium's checker only sees step 1)."""
FAULT_AT = -(-(ROLLOUT_STEPS + 50) // EPISODE) * EPISODE + FAULT_STEP
"""Step of an env instance (counted across its episodes) at which it misbehaves: FAULT_STEP into an episode,
beyond the steps the CLI's contract check takes on its own instance (ROLLOUT_STEPS + ~15 checker steps)."""
STREAMS = 8
"""Env instances per run in this sweep, all in lockstep: ppo's 8 envs, grpo-g2's 4 start states × 2."""
STEPS = STREAMS * (FAULT_AT + EPISODE)
"""Env-step budget per run: every instance gets past FAULT_AT (ppo ~7 updates, grpo-g2 ~20)."""
HANG_LIMIT_FACTOR = 3
"""Per-run limit of a sweep with a hanging env, as a multiple of the longest run of the first sweep (from its
config.json to its summary.json, as the executor times it): healthy runs of the same budget finish well inside
it on the machine at hand, and the hanging run reaches its hang (FAULT_AT steps, before the budget) first."""

FAULTY_ENVS = textwrap.dedent(
    f'''
    """Tiny Box-observation / Discrete-action envs that misbehave at the {FAULT_AT}th step of an instance."""
    import os
    import threading
    from pathlib import Path

    import gymnasium as gym
    import numpy as np

    FAULT_AT = {FAULT_AT}


    class Healthy(gym.Env):
        """Observation: 4 uniform floats; action 0 earns 1, action 1 earns 0; truncated after {EPISODE} steps."""

        metadata = {{"render_modes": []}}

        def __init__(self):
            self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
            self.action_space = gym.spaces.Discrete(2)
            self.t = self.total_steps = 0

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self._obs(), {{}}

        def _obs(self):
            return self.np_random.uniform(-1.0, 1.0, 4).astype(np.float32)

        def step(self, action):
            self.t += 1
            self.total_steps += 1
            obs, reward = self._obs(), float(action == 0)
            if self.total_steps == FAULT_AT:
                obs, reward = self.fault(obs, reward)
            return obs, reward, False, False, {{}}

        def fault(self, obs, reward):
            return obs, reward


    class Raise(Healthy):
        def fault(self, obs, reward):
            raise RuntimeError(f"injected fault at episode step {{self.t}}")


    class NaNReward(Healthy):
        def fault(self, obs, reward):
            return obs, float("nan")


    class NaNObs(Healthy):
        def fault(self, obs, reward):
            obs[2] = np.nan
            return obs, reward


    class Exit(Healthy):
        def fault(self, obs, reward):
            os._exit(3)


    class Hang(Healthy):
        def fault(self, obs, reward):
            Path(os.environ["FAULTY_MARKERS"], f"hang-{{os.getpid()}}").touch()
            threading.Event().wait()  # forever: only the executor's kill ends this run
            return obs, reward


    class RaiseMarkup(Healthy):
        def fault(self, obs, reward):
            raise KeyError("[obs] missing after [/] in the info dict")


    for _cls in (Healthy, Raise, NaNReward, NaNObs, Exit, Hang, RaiseMarkup):
        gym.register(f"{{_cls.__name__}}-v0", entry_point=_cls, max_episode_steps={EPISODE})
    '''
)

ALGOS = ["ppo", "grpo-g2"]
SAFETY_S = 1800
"""A stuck sweep fails the test after this instead of hanging CI (not a correctness limit: a sweep here takes
well under a minute on the slowest machine of this kind measured)."""


@pytest.fixture(scope="module")
def faulty_path(tmp_path_factory) -> Path:
    """A directory outside the repository holding the importable `faultyenvs` package."""
    root = tmp_path_factory.mktemp("pkgs")
    (root / "faultyenvs").mkdir()
    (root / "faultyenvs" / "__init__.py").write_text(FAULTY_ENVS)
    return root


def rlbench_run(faulty_path: Path, out: Path, envs: list[str], *extra: str) -> subprocess.CompletedProcess:
    """`rlbench run` in a subprocess from outside the repository, with the env package on PYTHONPATH.

    4 jobs on 2 cores: the two hanging runs sleep, so the others still get both cores meanwhile."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(faulty_path), env.get("PYTHONPATH")) if p)
    env["FAULTY_MARKERS"] = str(markers_dir(out))
    options = {"algos": "ppo,grpo", "group_sizes": 2, "seed_list": 0, "steps": STEPS, "jobs": 4}
    envs_arg = ",".join(f"faultyenvs:{e}" for e in envs)
    args = [sys.executable, "-m", "rlbench.cli", *run_args(out, envs=envs_arg, **options), *extra]
    return subprocess.run(args, cwd=out.parent, env=env, capture_output=True, text=True, timeout=SAFETY_S, check=False)


def markers_dir(out: Path) -> Path:
    """Where the envs of the sweep in `out` leave marker files (beside it, so it never looks like a run)."""
    path = out.parent / f"{out.name}-markers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(out: Path, env: str, algo: str) -> Path:
    return out / f"faultyenvs--{env}" / algo / "seed0"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def flat(text: str) -> str:
    """Output without whitespace, so line wrapping of long paths cannot hide a match."""
    return re.sub(r"\s+", "", text)


def names_step(reason: str) -> bool:
    """Whether the reason names the env step of the fault: a number in the window below, or a range a–b of at
    most one update that overlaps it.

    Before the faulty episode each of the STREAMS instances has run FAULT_AT − FAULT_STEP steps (whole
    episodes); the faulty transitions are then global env steps before + FAULT_STEP … before + STREAMS ×
    FAULT_STEP, depending on how parallel episodes are counted (0- or 1-based).
    """
    before = STREAMS * (FAULT_AT - FAULT_STEP)
    lo, hi = before + FAULT_STEP - 1, before + STREAMS * FAULT_STEP
    nums = [int(n) for n in re.findall(r"\d+", reason)]
    single = any(lo <= n <= hi for n in nums)
    bracket = any(a <= hi and b >= lo and b - a <= 8 * 64 for a, b in itertools.pairwise(nums))
    return "step" in reason and (single or bracket)


FAILURE_FIELDS = {"status", "reason", "traceback", "exit_code"}
"""What failure.json holds whichever executor ran the run (None where a field does not apply)."""
ENVS = ["Healthy-v0", "Raise-v0", "NaNReward-v0", "Exit-v0", "NaNObs-v0", "RaiseMarkup-v0"]


@pytest.fixture(scope="module")
def sweep(faulty_path, tmp_path_factory):
    """The mixed sweep (no time limit) run twice: (out, first result, mtimes after it, second result, seconds of
    its longest run)."""
    out = tmp_path_factory.mktemp("faults") / "sweep"
    first = rlbench_run(faulty_path, out, ENVS)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.is_file()}
    longest = longest_run_s(out)
    second = rlbench_run(faulty_path, out, ENVS)
    return out, first, mtimes, second, longest


@pytest.fixture(scope="module")
def hang_limit(sweep) -> float:
    """Per-run limit for sweeps with a hanging env: HANG_LIMIT_FACTOR × the longest run of the first sweep on this
    machine (measured before the rerun touches it)."""
    return round(HANG_LIMIT_FACTOR * sweep[4], 1)


@pytest.fixture(scope="module")
def hang_sweep(faulty_path, tmp_path_factory, hang_limit):
    """A hanging env beside a healthy one: (out, result, seconds)."""
    out = tmp_path_factory.mktemp("hang") / "sweep"
    t0 = time.monotonic()
    result = rlbench_run(faulty_path, out, ["Hang-v0", "Healthy-v0"], "--time-limit", f"{hang_limit:g}")
    return out, result, time.monotonic() - t0


def test_worker_processes_can_import_the_env_package(sweep):
    out, first, *_ = sweep
    for algo in ALGOS:
        failure = run_dir(out, "Healthy-v0", algo) / "failure.json"
        assert not failure.exists(), f"healthy run failed: {read(failure)['reason']}\n{first.stderr}"


def test_healthy_runs_finish(sweep):
    out, first, *_ = sweep
    for algo in ALGOS:
        d = run_dir(out, "Healthy-v0", algo)
        assert (d / "summary.json").is_file(), first.stdout + first.stderr
        summary = read(d / "summary.json")
        assert summary["status"] == "ok", summary
        assert summary["env_steps"] >= STEPS
        assert len(pd.read_parquet(d / "metrics.parquet")) == summary["updates"] > 0


def test_raising_env_fails_only_its_run_with_reason_and_traceback(sweep):
    out, *_ = sweep
    for algo in ALGOS:
        d = run_dir(out, "Raise-v0", algo)
        assert not (d / "summary.json").exists()
        failure = read(d / "failure.json")
        assert set(failure) == FAILURE_FIELDS and failure["status"] == "failed" and failure["exit_code"] is None
        assert failure["reason"] == f"RuntimeError: injected fault at episode step {FAULT_STEP}"
        assert "Traceback (most recent call last)" in failure["traceback"]
        assert f"RuntimeError: injected fault at episode step {FAULT_STEP}" in failure["traceback"]
        assert "faultyenvs/__init__.py" in failure["traceback"]


def test_nan_reward_after_the_first_step_is_env_nan_with_its_step(sweep):
    out, *_ = sweep
    for algo in ALGOS:
        d = run_dir(out, "NaNReward-v0", algo)
        assert not (d / "failure.json").exists()
        summary = read(d / "summary.json")
        assert summary["status"] == "env_nan", summary
        assert "reward" in summary["reason"], summary["reason"]
        assert names_step(summary["reason"]), f"reason does not name the step: {summary['reason']!r}"


def test_worker_exit_is_failed_with_its_exit_code(sweep):
    out, *_ = sweep
    for algo in ALGOS:
        d = run_dir(out, "Exit-v0", algo)
        assert not (d / "summary.json").exists()
        failure = read(d / "failure.json")
        assert failure["status"] == "failed"
        assert "exit" in failure["reason"] and re.search(r"\b3\b", failure["reason"]), failure
        assert failure.get("exit_code") == 3, failure


def test_hanging_run_is_killed_at_the_time_limit_and_blocks_no_other_run(hang_sweep, hang_limit):
    out, result, seconds = hang_sweep
    assert result.returncode == 1, result.stdout + result.stderr
    for algo in ALGOS:
        d = run_dir(out, "Hang-v0", algo)
        assert not (d / "summary.json").exists()
        failure = read(d / "failure.json")
        assert failure["status"] == "failed"
        assert failure["reason"] == f"timeout: exceeded the per-run limit of {hang_limit:g} s", failure
        assert read(run_dir(out, "Healthy-v0", algo) / "summary.json")["status"] == "ok"
    assert len(list(markers_dir(out).glob("hang-*"))) == len(ALGOS), "every hanging run reached its hang"
    assert seconds >= hang_limit  # and stayed there until the kill


FAILED = [(env, algo) for env in ("Raise-v0", "Exit-v0", "RaiseMarkup-v0") for algo in ALGOS]
FINISHED = [(env, algo) for env in ("Healthy-v0", "NaNReward-v0", "NaNObs-v0") for algo in ALGOS]


@pytest.mark.parametrize("which", [0, 1], ids=["first", "rerun"])
def test_cli_exits_nonzero_and_lists_every_failure(sweep, which):
    out, first, _, second, _ = sweep
    result = (first, second)[which]
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{len(FAILED)} run(s) failed" in result.stderr, result.stderr
    stderr = flat(result.stderr)
    for env, algo in FAILED:
        d = run_dir(out, env, algo)
        assert flat(f"{d}: {read(d / 'failure.json')['reason']}") in stderr, (env, algo, result.stderr)
    for env, algo in FINISHED:
        assert flat(str(run_dir(out, env, algo))) + ":" not in stderr


def test_rerun_keeps_finished_runs_and_redoes_failed_ones(sweep):
    out, _, mtimes, _, _ = sweep
    for env, algo in FINISHED:
        d = run_dir(out, env, algo)
        for name in ("config.json", "summary.json", "metrics.parquet", "evals.parquet"):
            assert mtimes[d / name] == (d / name).stat().st_mtime_ns, f"{d / name} was rewritten"
    for env, algo in FAILED:
        d = run_dir(out, env, algo)
        assert (d / "config.json").stat().st_mtime_ns > mtimes[d / "config.json"], f"{d} was not redone"
        assert read(d / "failure.json")["status"] == "failed"
    assert not list(out.glob("**/.*.tmp"))


def test_nan_observation_after_the_first_step_is_env_nan_with_its_step(sweep):
    out, *_ = sweep
    for algo in ALGOS:
        d = run_dir(out, "NaNObs-v0", algo)
        assert (d / "summary.json").is_file(), read(d / "failure.json")["reason"]
        summary = read(d / "summary.json")
        assert summary["status"] == "env_nan", summary
        assert "obs" in summary["reason"], summary["reason"]
        assert names_step(summary["reason"]), f"reason does not name the step: {summary['reason']!r}"


def test_markup_like_exception_text_is_reported_verbatim(sweep):
    """Exception messages are data: brackets in them must neither vanish nor be interpreted as styles."""
    out, result, *_ = sweep
    reason = "KeyError: '[obs] missing after [/] in the info dict'"
    for algo in ALGOS:
        assert read(run_dir(out, "RaiseMarkup-v0", algo) / "failure.json")["reason"] == reason
    assert result.returncode == 1, result.stdout + result.stderr
    assert flat(reason) in flat(result.stdout), result.stdout
    assert flat(reason) in flat(result.stderr), result.stderr


def longest_run_s(out: Path) -> float:
    """The longest finished run of a sweep, from its config.json to its summary.json (as the executor times it)."""
    return max(
        (d / "summary.json").stat().st_mtime - (d / "config.json").stat().st_mtime
        for d in (p.parent for p in out.glob("**/summary.json"))
    )


@pytest.fixture(scope="module")
def ray_sweep(faulty_path, tmp_path_factory):
    pytest.importorskip("ray")
    out = tmp_path_factory.mktemp("ray") / "sweep"
    return out, rlbench_run(faulty_path, out, ["Healthy-v0", "Raise-v0", "Exit-v0"], "--executor", "ray")


@pytest.fixture(scope="module")
def ray_hang_sweep(faulty_path, tmp_path_factory, ray_sweep):
    """Hanging runs on Ray, with HANG_LIMIT_FACTOR × the longest run of the Ray sweep (Ray's worker start-up
    included) as the limit: (out, result, limit)."""
    limit = round(HANG_LIMIT_FACTOR * longest_run_s(ray_sweep[0]), 1)
    out = tmp_path_factory.mktemp("rayhang") / "sweep"
    return out, rlbench_run(faulty_path, out, ["Hang-v0"], "--executor", "ray", "--time-limit", f"{limit:g}"), limit


def test_ray_executor_isolates_each_failure(ray_sweep):
    out, result = ray_sweep
    assert result.returncode == 1, result.stdout + result.stderr
    for algo in ALGOS:
        assert read(run_dir(out, "Healthy-v0", algo) / "summary.json")["status"] == "ok"
        raised = read(run_dir(out, "Raise-v0", algo) / "failure.json")
        assert set(raised) == FAILURE_FIELDS, raised
        assert raised["reason"] == f"RuntimeError: injected fault at episode step {FAULT_STEP}", raised
        assert 'File "' in raised["traceback"] and "\x1b" not in raised["traceback"], raised
        died = read(run_dir(out, "Exit-v0", algo) / "failure.json")
        assert "worker died" in died["reason"] and set(died) == FAILURE_FIELDS, died
    for env in ("Raise-v0", "Exit-v0"):
        assert f"faultyenvs--{env}" in flat(result.stderr)


def test_ray_executor_kills_a_hanging_run_at_the_time_limit(ray_hang_sweep):
    out, result, limit = ray_hang_sweep
    assert result.returncode == 1, result.stdout + result.stderr
    for algo in ALGOS:
        hung = read(run_dir(out, "Hang-v0", algo) / "failure.json")
        assert hung["reason"] == f"timeout: exceeded the per-run limit of {limit:g} s", hung
    assert len(list(markers_dir(out).glob("hang-*"))) == len(ALGOS), "every hanging run reached its hang"
