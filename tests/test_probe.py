"""The gradient-noise probe: its batched K gradients equal K separate backward passes, for every loss family
(that the probe never moves training is tested with the other random streams in test_measurement.py)."""

from __future__ import annotations

import re
from functools import partial

import pytest
import torch
from typer.testing import CliRunner

from rlbench.cli import app
from rlbench.envs.textgen import ENV_ID
from rlbench.matrix import algo_for
from rlbench.metrics import gradient_noise
from rlbench.probe import split_gradients
from rlbench.probe_bench import MODES, compare, summarize
from rlbench.rng import stream_seed
from rlbench.task import make_task
from rlbench.train import Trainer, estimate_advantages, policy_objective, split

ROUNDING = 1e-5
"""Largest |batched − looped| gradient coordinate, relative to the largest coordinate of that split's gradient.
Both ways compute each coordinate as the same sum over a split's samples in float32, in another order (one
batched matrix product instead of one per split, padding rows that add exact zeros); reordering a sum of n
terms moves it by at most ~n·ε·Σ|terms| with ε = 1.19e-7, so a few hundred samples allow ~1e-5 of the
largest coordinate (84 ε). Measured here: at most 1.4e-7. A wrong split, sign or loss term is off by O(1)."""

FAMILIES = {
    "ppo (clip, GAE, critic)": ("ppo", {}),
    "pg (plain, no baseline)": ("pg", {}),
    "critic (return − V)": ("critic", {}),
    "grpo (clip, k3 KL in the loss, per-sequence mean)": ("grpo", {"group_size": 4}),
    "dr_grpo (per-token mean)": ("dr_grpo", {"group_size": 4}),
    "ppo_kl (k1 KL in the reward)": ("ppo_kl", {}),
    "ppo_noclip (ratio objective)": ("ppo_noclip", {}),
}


def probe_inputs(name: str, changes: dict, env_id: str = "CartPole-v1", updates: int = 2):
    """(cfg, policy, the probe's K parts) at the start of update `updates` of seed 0 (parameters already
    trained, so the ratio, the KL term and the clip are all live)."""
    cfg = algo_for(name, env_id).replace(**changes)
    torch.manual_seed(stream_seed(0, "init"))
    task = make_task(env_id, {}, cfg, 0, 1)
    trainer = Trainer(cfg, task, 0)
    for i in range(updates):
        trainer.update(task.collector.collect(task.policy, trainer.action_rng), progress=i / (updates + 1))
    traj = task.collector.collect(task.policy, trainer.action_rng)
    task.collector.close()
    per_step, _ = estimate_advantages(cfg, traj, trainer.critic)
    units = traj.units(per_step)
    trainer._old_logp(units)
    return cfg, task.policy, split(units, cfg.noise_splits, torch.Generator().manual_seed(1))


def snapshot(p: torch.Tensor) -> tuple[list, list | None]:
    """A parameter's values and gradient as comparable lists."""
    return p.tolist(), None if p.grad is None else p.grad.tolist()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_gradients_equal_one_backward_per_split(family):
    name, changes = FAMILIES[family]
    cfg, policy, parts = probe_inputs(name, changes)
    assert len({part["mask"].shape[0] for part in parts}) > 1  # unequal splits: padding is exercised
    objective = partial(policy_objective, cfg)
    state = [snapshot(p) for p in policy.parameters()]
    looped = split_gradients(objective, policy, parts, batched=False)
    batched = split_gradients(objective, policy, parts, batched=True)
    assert batched.shape == looped.shape == (cfg.noise_splits, sum(p.numel() for p in policy.parameters()))
    scale = looped.abs().amax(dim=1, keepdim=True)
    assert (scale > 0).all()
    assert ((batched - looped).abs() <= ROUNDING * scale).all(), float(((batched - looped).abs() / scale).max())
    for (cos_b, var_b), (cos_l, var_l) in [(gradient_noise(batched), gradient_noise(looped))]:
        assert cos_b == pytest.approx(cos_l, abs=1e-5) and var_b == pytest.approx(var_l, rel=1e-4)
    assert state == [snapshot(p) for p in policy.parameters()]  # neither θ nor its .grad moved


def test_gaussian_actions_are_batched_too():
    cfg, policy, parts = probe_inputs("ppo", {"n_envs": 2, "n_steps": 32}, env_id="Pendulum-v1", updates=1)
    assert policy.log_std is not None and policy.probe_batched
    objective = partial(policy_objective, cfg)
    looped = split_gradients(objective, policy, parts, batched=False)
    batched = split_gradients(objective, policy, parts, batched=True)
    assert ((batched - looped).abs() <= ROUNDING * looped.abs().amax(dim=1, keepdim=True)).all()


def test_textgen_keeps_one_backward_per_split():
    task = make_task(ENV_ID, {}, algo_for("grpo", ENV_ID), 0, 1)
    assert not Trainer(algo_for("grpo", ENV_ID), task, 0).batched_probe


def test_bench_runs_each_cell_both_ways_and_prints_the_shares():
    result = CliRunner().invoke(
        app, ["bench", "probe", "--algos", "pg", "--envs", "CartPole-v1", "--preset", "smoke"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    number = r"\s+([\d.]+)"
    row = re.search(rf"│ pg\s+│ CartPole-v1\s+│\s+[\d.]+ │{number}% │{number}% │{number}% │{number}×", result.output)
    batched, looped, reference, ratio = (float(g) for g in row.groups())
    assert 0 < reference <= batched < 100 and 0 < looped < 100 and ratio > 0


def test_bench_rows_are_the_run_summaries_of_identical_training():
    runs = compare(["pg"], ["CartPole-v1"], preset="smoke")
    assert list(runs["probe"]) == list(MODES.values()) and runs["env_steps"].nunique() == 1
    shares = (runs["probe_time_s"] + runs["reference_time_s"]) / runs["wall_time_s"]
    assert list(runs["measure_share"]) == pytest.approx(list(shares))
    summary = summarize(runs).iloc[0]
    assert summary["probe_ratio"] == pytest.approx(runs["probe_time_s"][0] / runs["probe_time_s"][1])
