"""User environments: check-env names each broken contract; Discrete, Tuple observations and MultiDiscrete actions
run."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from runargs import run_args

from rlbench.executor import check_contract_isolated

ENVS = textwrap.dedent('''
    import os
    import threading
    import time

    import gymnasium as gym
    import numpy as np


    class Base(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def obs(self):
            return self.np_random.uniform(-1, 1, 3).astype(np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self.obs(), {}

        def step(self, action):
            self.t += 1
            return self.obs(), self.reward(), False, self.t >= 20, {}

        def reward(self):
            return 1.0


    class WrongDtype(Base):
        def obs(self):
            return self.np_random.uniform(-1, 1, 3)  # float64 where the space says float32


    class SeedIgnored(Base):
        def reset(self, *, seed=None, options=None):
            super().reset(seed=None)  # drops the seed: every reset starts somewhere new
            self.t = 0
            return self.obs(), {}


    class NaNReward(Base):
        def reward(self):
            return float("nan") if self.t == 3 else 1.0


    class Pick(Base):
        """MultiDiscrete actions: reward 1 per head that picks its last option."""

        action_space = gym.spaces.MultiDiscrete([2, 3])

        def step(self, action):
            self.t += 1
            return self.obs(), float(action[0] == 1) + float(action[1] == 2), False, self.t >= 20, {}


    class Shifted(Base):
        """Discrete actions numbered from -1: reward 1 for action +1."""

        action_space = gym.spaces.Discrete(3, start=-1)

        def step(self, action):
            assert self.action_space.contains(action), action
            self.t += 1
            return self.obs(), float(action == 1), False, self.t >= 20, {}


    class CrashOnReset(Base):
        def reset(self, *, seed=None, options=None):
            os._exit(5)


    class HangOnReset(Base):
        def reset(self, *, seed=None, options=None):
            threading.Event().wait()  # forever


    class SlowToMake(Base):
        """Slow to construct the first time in a process (as TextGen trains its models into a cold cache)."""

        cold = True

        def __init__(self):
            if SlowToMake.cold:
                time.sleep(3.0)
                SlowToMake.cold = False


    names = ("WrongDtype", "SeedIgnored", "NaNReward", "Pick", "Shifted", "CrashOnReset", "HangOnReset", "SlowToMake")
    for name in names:
        gym.register(f"brokenpkg/{name}-v0", entry_point=globals()[name], max_episode_steps=20)
''')


@pytest.fixture(scope="module")
def pythonpath(tmp_path_factory):
    root = tmp_path_factory.mktemp("userpkg")
    (root / "brokenpkg.py").write_text(ENVS)
    return str(root)


def rlbench(pythonpath: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "rlbench.cli", *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    "name, failing, words",
    [
        ("WrongDtype", "observations in space", ["float64", "Box"]),
        ("SeedIgnored", "seeded reset reproducible", ["reset(seed=1234)", "different"]),
        ("NaNReward", "finite rewards", ["nan", "step"]),
    ],
)
def test_check_env_names_each_problem(pythonpath, name, failing, words):
    result = rlbench(pythonpath, "check-env", f"brokenpkg:brokenpkg/{name}-v0")
    assert result.returncode == 1, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if failing in line)
    assert "FAIL" in row, result.stdout
    for word in words:
        assert word in result.stdout, (word, result.stdout)


@pytest.mark.parametrize(
    "name, words",
    [("CrashOnReset", "crashed the checking process (exit code 5)"), ("HangOnReset", "did not finish the checks")],
)
def test_an_env_that_crashes_or_hangs_while_checked_fails_the_check(pythonpath, monkeypatch, name, words):
    monkeypatch.syspath_prepend(pythonpath)  # the checking process gets this interpreter's sys.path
    checks = check_contract_isolated(f"brokenpkg:brokenpkg/{name}-v0", {}, seeded_reset=True, timeout=5.0)
    assert len(checks) == 1 and not checks[0].ok and words in checks[0].detail, checks


def test_construction_time_does_not_count_against_the_checks_time_limit(pythonpath, monkeypatch):
    monkeypatch.syspath_prepend(pythonpath)
    checks = check_contract_isolated("brokenpkg:brokenpkg/SlowToMake-v0", {}, seeded_reset=True, timeout=2.0)
    assert all(c.ok for c in checks) and len(checks) > 1, checks


def test_a_broken_env_is_refused_before_any_run(pythonpath, tmp_path):
    out = tmp_path / "sweep"
    result = rlbench(pythonpath, *run_args(out, envs="brokenpkg:brokenpkg/NaNReward-v0", algos="ppo"))
    assert result.returncode == 2
    assert "environment contract failed" in result.stderr and "finite rewards" in result.stderr
    assert not out.exists()


def test_discrete_observations_and_multidiscrete_actions_run_end_to_end(pythonpath, tmp_path):
    out = tmp_path / "sweep"
    result = rlbench(
        pythonpath,
        *run_args(
            out,
            envs="FrozenLake-v1,brokenpkg:brokenpkg/Pick-v0",
            algos="pg,ppo,grpo",
            group_sizes=2,
            seeds=1,
            steps=1500,
        ),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = [json.loads(p.read_text()) for p in out.glob("**/summary.json")]
    assert len(summaries) == 6 and all(s["status"] == "ok" for s in summaries)
    pick = json.loads((out / "brokenpkg--brokenpkg__Pick-v0/ppo/seed0/summary.json").read_text())
    assert pick["params_policy"] == 3 * 64 + 64 + 64 * 64 + 64 + 64 * 5 + 5  # one output per action option


def test_env_module_registers_plain_ids_for_the_workers_too(pythonpath, tmp_path):
    out = tmp_path / "sweep"
    result = rlbench(
        pythonpath, *run_args(out, env_module="brokenpkg", envs="brokenpkg/Pick-v0", algos="pg", seeds=1, steps=400)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.loads((out / "brokenpkg--brokenpkg__Pick-v0/pg/seed0/config.json").read_text())
    assert config["env_id"] == "brokenpkg:brokenpkg/Pick-v0"


def test_an_env_module_that_cannot_be_imported_is_a_clear_error(pythonpath, tmp_path):
    result = rlbench(pythonpath, "run", "--env-module", "no_such_pkg", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "no_such_pkg" in result.stderr and "cannot be imported" in result.stderr


def test_discrete_actions_with_a_start_offset_reach_the_env_shifted(pythonpath, tmp_path):
    out = tmp_path / "sweep"
    result = rlbench(
        pythonpath, *run_args(out, envs="brokenpkg:brokenpkg/Shifted-v0", algos="ppo", seeds=1, steps=2000)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "brokenpkg--brokenpkg__Shifted-v0/ppo/seed0/summary.json").read_text())
    assert summary["status"] == "ok" and summary["final_return"] > 6.7  # better than random (20/3 per episode)


def test_tuple_observations_are_flattened_checked_and_trained(tmp_path):
    """Blackjack-v1 (Tuple(Discrete(32), Discrete(11), Discrete(2))): check-env reports the flattening and runs
    every check; a smoke sweep trains on the 45-dim one-hot Box that Gymnasium's FlattenObservation makes."""
    checked = rlbench("", "check-env", "Blackjack-v1")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "observations flattened" in checked.stdout and "Box(0, 1, (45,)" in checked.stdout
    assert checked.stdout.count(" pass ") == 8 and "FAIL" not in checked.stdout
    out = tmp_path / "sweep"
    sweep = ["--envs", "Blackjack-v1", "--algos", "ppo,grpo", "--group-sizes", "8", "--steps", "1024"]
    result = rlbench("", "run", *sweep, "--seeds", "1", "--preset", "smoke", "--out", str(out), "--no-report")
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = {p.parts[-3]: json.loads(p.read_text()) for p in out.glob("**/summary.json")}
    assert set(summaries) == {"ppo", "grpo-g8"} and all(s["status"] == "ok" for s in summaries.values())
    assert summaries["ppo"]["params_policy"] == 45 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2


def test_envs_know_no_learner():
    """No module under envs/ imports the training side (loop, rollout, task, matrix, store, executor, ...):
    environments are a layer below the code that trains on them."""
    import ast
    import pathlib

    import rlbench.envs

    allowed = {"rlbench.envs"}
    for path in pathlib.Path(rlbench.envs.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith("rlbench"):
                    assert any(name == a or name.startswith(a + ".") for a in allowed), f"{path.name} imports {name}"
