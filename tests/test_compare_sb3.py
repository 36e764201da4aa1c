"""rlbench.compare_sb3 on a tiny budget: one row per implementation, finite numbers, matching env steps."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("stable_baselines3")

from rlbench.compare_sb3 import COLUMNS, compare, summarize  # noqa: E402
from rlbench.matrix import algo_for  # noqa: E402
from rlbench.sb3_mapping import sb3_kwargs  # noqa: E402


def test_compare_tiny_budget() -> None:
    cfg = algo_for("ppo", "CartPole-v1")
    df = compare("CartPole-v1", steps=2048, seeds=[0], eval_episodes=2)
    assert list(df.columns) == COLUMNS
    assert sorted(df["impl"]) == ["rlbench", "sb3"] and set(df["seed"]) == {0}
    for col in COLUMNS[2:]:
        assert all(math.isfinite(float(v)) for v in df[col]), col
    steps = df.set_index("impl")["env_steps"]
    assert (steps >= 2048).all()
    assert abs(int(steps["rlbench"]) - int(steps["sb3"])) <= cfg.n_envs * cfg.n_steps
    summary = summarize(df)
    assert summary.loc["sb3", "speed_vs_sb3"] == pytest.approx(1.0)
    assert summary.loc["rlbench", "speed_vs_sb3"] > 0


def test_sb3_kwargs_mirror_preset() -> None:
    cfg = algo_for("ppo", "CartPole-v1")
    kw = sb3_kwargs(cfg, 10_240)
    assert kw["batch_size"] == cfg.n_envs * cfg.n_steps // cfg.minibatches
    assert kw["learning_rate"](1.0 - 512 / 10_240) == pytest.approx(cfg.lr)  # first update: full lr
    assert kw["learning_rate"](0.0) == pytest.approx(cfg.lr * 512 / 10_240)  # last update: > 0, as rlbench
    with pytest.raises(ValueError, match="kl_coef"):
        sb3_kwargs(cfg.replace(kl_coef=0.1), 10_240)
