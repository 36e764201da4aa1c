"""Fault injection through the real CLI: envs that raise, return NaN, kill their worker or hang, mixed with a
healthy env in one sweep. Only the faulty runs fail, each with its status and reason on disk; the sweep exits
non-zero listing every failure; re-running the same command keeps finished runs and redoes the failed ones.

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

try:
    from rlbench.contract import ROLLOUT_STEPS
except ImportError:  # pragma: no cover - the contract check may move; the faults then just fire earlier
    ROLLOUT_STEPS = 300

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
TIME_LIMIT = 8.0
"""Per-run limit: the hanging run is killed after this; every other run here takes ~1–3 s."""

FAULTY_ENVS = textwrap.dedent(
    f'''
    """Tiny Box-observation / Discrete-action envs that misbehave at the {FAULT_AT}th step of an instance."""
    import os
    import time

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
            time.sleep(600)
            return obs, reward


    class RaiseMarkup(Healthy):
        def fault(self, obs, reward):
            raise KeyError("[obs] missing after [/] in the info dict")


    for _cls in (Healthy, Raise, NaNReward, NaNObs, Exit, Hang, RaiseMarkup):
        gym.register(f"{{_cls.__name__}}-v0", entry_point=_cls, max_episode_steps={EPISODE})
    '''
)

ALGOS = ["ppo", "grpo-g2"]


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
    args = [
        sys.executable,
        "-m",
        "rlbench.cli",
        "run",
        "--envs",
        ",".join(f"faultyenvs:{e}" for e in envs),
        "--algos",
        "ppo,grpo",
        "--group-sizes",
        "2",
        "--seed-list",
        "0",
        "--steps",
        str(STEPS),
        "--preset",
        "smoke",
        "--jobs",
        "4",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(args, cwd=out.parent, env=env, capture_output=True, text=True, timeout=240, check=False)


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


ENVS = ["Hang-v0", "Healthy-v0", "Raise-v0", "NaNReward-v0", "Exit-v0"]


@pytest.fixture(scope="module")
def sweep(faulty_path, tmp_path_factory):
    """The mixed sweep run twice: (out, first result, mtimes after it, second result, seconds per pass)."""
    out = tmp_path_factory.mktemp("faults") / "sweep"
    t0 = time.monotonic()
    first = rlbench_run(faulty_path, out, ENVS, "--time-limit", str(TIME_LIMIT))
    t1 = time.monotonic()
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.is_file()}
    second = rlbench_run(faulty_path, out, ENVS, "--time-limit", str(TIME_LIMIT))
    t2 = time.monotonic()
    return out, first, mtimes, second, (t1 - t0, t2 - t1)


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
        assert failure["status"] == "failed"
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


def test_hanging_run_is_killed_at_the_time_limit(sweep):
    out, _, _, _, (first_s, _) = sweep
    for algo in ALGOS:
        d = run_dir(out, "Hang-v0", algo)
        assert not (d / "summary.json").exists()
        failure = read(d / "failure.json")
        assert failure["status"] == "failed"
        assert "timeout" in failure["reason"] and f"{TIME_LIMIT:g}" in failure["reason"], failure
    assert first_s < 4 * TIME_LIMIT + 60, f"the sweep took {first_s:.0f} s: was the hang really killed?"


FAILED = [(env, algo) for env in ("Hang-v0", "Raise-v0", "Exit-v0") for algo in ALGOS]
FINISHED = [(env, algo) for env in ("Healthy-v0", "NaNReward-v0") for algo in ALGOS]


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


@pytest.fixture(scope="module")
def more_faults_sweep(faulty_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bugs") / "sweep"
    return out, rlbench_run(faulty_path, out, ["NaNObs-v0", "RaiseMarkup-v0"])


def test_nan_observation_after_the_first_step_is_env_nan_with_its_step(more_faults_sweep):
    out, _ = more_faults_sweep
    for algo in ALGOS:
        d = run_dir(out, "NaNObs-v0", algo)
        assert (d / "summary.json").is_file(), read(d / "failure.json")["reason"]
        summary = read(d / "summary.json")
        assert summary["status"] == "env_nan", summary
        assert "obs" in summary["reason"], summary["reason"]
        assert names_step(summary["reason"]), f"reason does not name the step: {summary['reason']!r}"


def test_markup_like_exception_text_is_reported_verbatim(more_faults_sweep):
    """Exception messages are data: brackets in them must neither vanish nor be interpreted as styles."""
    out, result = more_faults_sweep
    reason = "KeyError: '[obs] missing after [/] in the info dict'"
    for algo in ALGOS:
        assert read(run_dir(out, "RaiseMarkup-v0", algo) / "failure.json")["reason"] == reason
    assert result.returncode == 1, result.stdout + result.stderr
    assert flat(reason) in flat(result.stdout), result.stdout
    assert flat(reason) in flat(result.stderr), result.stderr


@pytest.fixture(scope="module")
def ray_sweep(faulty_path, tmp_path_factory):
    pytest.importorskip("ray")
    out = tmp_path_factory.mktemp("ray") / "sweep"
    envs = ["Healthy-v0", "Raise-v0", "Exit-v0", "Hang-v0"]
    return out, rlbench_run(faulty_path, out, envs, "--executor", "ray", "--time-limit", f"{TIME_LIMIT:g}")


def test_ray_executor_isolates_each_failure(ray_sweep):
    out, result = ray_sweep
    assert result.returncode == 1, result.stdout + result.stderr
    for algo in ALGOS:
        assert read(run_dir(out, "Healthy-v0", algo) / "summary.json")["status"] == "ok"
        raised = read(run_dir(out, "Raise-v0", algo) / "failure.json")
        assert raised["reason"] == f"RuntimeError: injected fault at episode step {FAULT_STEP}", raised
        assert 'File "' in raised["traceback"] and "\x1b" not in raised["traceback"], raised
        died = read(run_dir(out, "Exit-v0", algo) / "failure.json")
        assert "worker died" in died["reason"], died
        hung = read(run_dir(out, "Hang-v0", algo) / "failure.json")
        assert "timeout" in hung["reason"], hung
    for env in ("Raise-v0", "Exit-v0", "Hang-v0"):
        assert f"faultyenvs--{env}" in flat(result.stderr)
