"""Stable-Baselines3 as matrix columns (issue 13, acceptance 4): `sb3_ppo` and `sb3_a2c` run through the runner
into the same files as a native run, the report renders them beside the native columns and no claim uses them,
equal seeds give equal metrics, and bad input is refused up front."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from runargs import assert_refused, run_args
from typer.testing import CliRunner

pytest.importorskip("stable_baselines3")

import stable_baselines3  # noqa: E402

from rlbench import sb3_mapping  # noqa: E402
from rlbench.algos import NATIVE, PRESETS  # noqa: E402
from rlbench.cli import app  # noqa: E402
from rlbench.matrix import (  # noqa: E402
    DEFAULT_ALGOS,
    EnvRequest,
    MatrixError,
    algo_for,
    build_cells,
    resolve_algos,
    resolve_spec,
)
from rlbench.reports import claims as C  # noqa: E402
from rlbench.sb3_runner import train_sb3  # noqa: E402
from rlbench.spec import RunSpec, Status  # noqa: E402

runner = CliRunner()
SB3 = ("sb3_ppo", "sb3_a2c")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """ppo, sb3_ppo and sb3_a2c on CartPole, smoke budgets, one seed, no report."""
    out = tmp_path_factory.mktemp("sb3") / "sweep"
    args = run_args(out, algos="ppo," + ",".join(SB3), envs="CartPole-v1", seeds=1, jobs=2)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_sb3_run_directories_hold_the_files_of_a_native_run(sweep) -> None:
    native = sweep / "CartPole-v1" / "ppo" / "seed0"
    files = sorted(p.name for p in native.iterdir())
    evals_native = pd.read_parquet(native / "evals.parquet")
    for column in SB3:
        run = sweep / "CartPole-v1" / column / "seed0"
        assert sorted(p.name for p in run.iterdir()) == files, column
        config = json.loads((run / "config.json").read_text())
        assert config.keys() == json.loads((native / "config.json").read_text()).keys()
        assert config["algo"]["trainer"] == column and config["torch_threads"] == 1
        assert config["versions"]["stable-baselines3"] == stable_baselines3.__version__
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "ok"
        for key in ("final_return", "env_steps_per_s", "wall_time_s", "env_steps"):
            assert np.isfinite(summary[key]) and summary[key] > 0, (column, key)
        assert 0 < summary["env_steps"] <= config["steps"]
        for absent in ("flops_total", "grad_noise_scale", "grad_cosine_mean", "update_memory_bytes"):
            assert absent not in summary, (column, absent)
        metrics = pd.read_parquet(run / "metrics.parquet")
        for absent in ("train/approx_kl", "train/clip_fraction", "train/kl_ref", "train/grad_cosine", "train/flops"):
            assert absent not in metrics, (column, absent)
        assert {"rollout/ep_rew_mean", "train/explained_variance", "train/lr", "time/fps"} <= set(metrics)
        assert metrics["env_steps"].is_monotonic_increasing and metrics["env_steps"].iloc[-1] == summary["env_steps"]
        evals = pd.read_parquet(run / "evals.parquet")
        assert list(evals.columns) == list(evals_native.columns)
        assert list(evals.checkpoint) == list(evals_native.checkpoint)
        # rlbench's evaluator on the same held-out seeds: the untrained policies differ, but the episode count
        # and the checkpoint-0 row exist exactly as for the native run.
        assert evals.loc[0, "env_steps"] == 0


def test_report_renders_them_beside_native_columns_and_no_claim_uses_them(sweep) -> None:
    result = runner.invoke(app, ["report", str(sweep)])
    assert result.exit_code == 0, result.output
    report = sweep / "report"
    final = pd.read_csv(report / "tables" / "final_returns.csv")
    assert set(final.algo) == {"ppo", *SB3}
    md = (report / "report.md").read_text()
    assert "take part in no test here" in md and all(c in md for c in SB3)
    claims = pd.read_csv(report / "tables" / "claims.csv")
    used = set(claims.column_a) | set(claims.column_b)
    assert not {c for c in used if c.startswith("sb3")}


def test_claims_leave_out_columns_another_library_trains() -> None:
    test = C.Test("CX", C.PRIMARY, "a", "b", "x", "x", "ratio", +1, ("lr",))
    runs = pd.DataFrame(
        [{"env": "E-v0", "algo": a, "seed": i, "x": v} for a, v in (("a", 2.0), ("b", 1.0)) for i in range(8)]
    )
    for trainer, n_a in (("rlbench", 8), ("sb3_ppo", 0)):
        configs = {("E-v0", "a"): {"trainer": trainer}, ("E-v0", "b"): {"trainer": "rlbench"}}
        table = C.evaluate(runs, configs, seed=0, reps=500, tests=(test,))
        assert set(table.n_a) == {n_a}, trainer
        assert (table.verdict == C.SUPPORTED).any() == (trainer == "rlbench")


@pytest.mark.parametrize("column", SB3)
def test_same_seed_and_config_give_identical_metrics(column) -> None:
    spec = resolve_spec(column, "CartPole-v1", steps=1200)
    first, second = train_sb3(spec), train_sb3(spec)
    timing = [k for k in first.metrics[0] if k.startswith("time/")]
    drop = lambda rows: pd.DataFrame(rows).drop(columns=timing)  # noqa: E731
    pd.testing.assert_frame_equal(drop(first.metrics), drop(second.metrics))
    pd.testing.assert_frame_equal(pd.DataFrame(first.evals), pd.DataFrame(second.evals))
    other = train_sb3(resolve_spec(column, "CartPole-v1", seed=1, steps=1200))
    assert not drop(other.metrics).equals(drop(first.metrics))


@pytest.mark.parametrize("column", SB3)
def test_a_run_whose_sb3_policy_turns_nan_ends_diverged_with_its_metrics(column, monkeypatch) -> None:
    algo = getattr(stable_baselines3, sb3_mapping.sb3_algo(resolve_spec(column, "CartPole-v1").algo))
    train, calls = algo.train, {"n": 0}

    def train_then_poison_the_second_update(self):
        train(self)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                next(self.policy.parameters()).fill_(math.nan)

    monkeypatch.setattr(algo, "train", train_then_poison_the_second_update)
    result = train_sb3(resolve_spec(column, "CartPole-v1", steps=4000))
    assert result.summary["status"] == Status.DIVERGED
    assert "non-finite by update 2" in result.summary["reason"]
    assert result.summary["updates"] == len(result.metrics) == 2
    assert math.isnan(result.summary["final_return"])


def test_sb3_ppo_has_ppos_settings_and_sb3_a2c_sb3s_defaults() -> None:
    for env_id in ("CartPole-v1", "Acrobot-v1"):
        ppo, sb3 = algo_for("ppo", env_id), algo_for("sb3_ppo", env_id)
        assert sb3.replace(name="ppo", trainer="rlbench") == ppo
    cells = build_cells(["ppo", "sb3_ppo"], [EnvRequest("CartPole-v1")], "smoke", [0], None, [8], [("ppo.lr", 2e-3)])
    assert [c.algo.lr for c in cells] == [2e-3, 2e-3]  # --set ppo.FIELD reaches sb3_ppo too
    defaults = inspect.signature(stable_baselines3.A2C.__init__).parameters
    kwargs = sb3_mapping.sb3_kwargs(PRESETS["sb3_a2c"], 10_000, "A2C")
    for name in ("learning_rate", "n_steps", "gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm"):
        assert kwargs[name] == defaults[name].default, name
    assert kwargs["normalize_advantage"] == defaults["normalize_advantage"].default


def test_listed_but_not_in_the_default_matrix() -> None:
    assert not set(SB3) & set(resolve_algos(["all"])) and not set(SB3) & set(DEFAULT_ALGOS)
    assert not set(SB3) & set(NATIVE)
    result = runner.invoke(app, ["list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and all(c in result.output for c in SB3)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--algos", "sb3_ppo", "--envs", "rlbench/TextGen-v0"], ["sb3_ppo", "rlbench/TextGen-v0", "allowed"]),
        (["--algos", "sb3_a2c", "--envs", "FrozenLake-v1"], ["sb3_a2c", "FrozenLake-v1", "flat Box"]),
        (["--algos", "sb3_ppo", "--set", "sb3_ppo.clip=none"], ["sb3_ppo", "PPO", "clip"]),
        (["--algos", "sb3_a2c", "--set", "sb3_a2c.epochs=4"], ["sb3_a2c", "A2C", "epochs"]),
        (["--algos", "ppo[trainer=sb3_ppo]"], ["trainer", "unknown field", "allowed"]),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, words) -> None:
    assert_refused(tmp_path / "sweep", args, words)


def test_a_missing_sb3_names_the_extra(monkeypatch) -> None:
    monkeypatch.setattr(sb3_mapping, "sb3_installed", lambda: False)
    with pytest.raises(MatrixError, match=r"sb3_a2c needs Stable-Baselines3.*rlbench\[sb3\]"):
        resolve_spec("sb3_a2c", "CartPole-v1")


def test_specs_record_their_trainer_and_read_back_equal() -> None:
    native, sb3 = resolve_spec("ppo", "CartPole-v1"), resolve_spec("sb3_ppo", "CartPole-v1")
    assert native.to_dict()["algo"]["trainer"] == "rlbench" and sb3.to_dict()["algo"]["trainer"] == "sb3_ppo"
    for spec in (native, sb3):
        assert RunSpec.from_dict(spec.to_dict()) == spec


def test_a2c_gets_its_own_learning_curve_panel_and_sb3_ppo_sits_beside_ppo() -> None:
    from rlbench.reports.render import panel_groups

    columns = ["ppo", "sb3_ppo", "sb3_a2c"]
    configs = {("CartPole-v1", c): dataclasses.asdict(resolve_spec(c, "CartPole-v1").algo) for c in columns}
    groups = panel_groups(SimpleNamespace(algos=columns, configs=configs))
    assert sorted(groups.values()) == [["ppo", "sb3_ppo"], ["sb3_a2c"]]
