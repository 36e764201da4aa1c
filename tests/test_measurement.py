"""Measurement and fairness of the training loop: separate clipping, RNG streams, budgets, TextGen's return,
whole-run FLOPs and memory."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import rlbench.train as train_module
from rlbench.algos import NATIVE, PRESETS
from rlbench.envs.textgen import ENV_ID
from rlbench.matrix import BUILTIN_ENVS, algo_for
from rlbench.metrics import FlopMeter, SavedBytes
from rlbench.policies import MLPPolicy
from rlbench.rollout import MemberEnvs, make_vec_env, run_episodes
from rlbench.spec import RunSpec
from rlbench.task import make_task
from rlbench.textgen_task import TextGenCollector
from rlbench.train import Trainer, train

SMALL = {"n_steps": 16, "n_envs": 4, "n_starts": 4}


def small(name: str, **changes):
    cfg = PRESETS[name]
    base = {"n_steps": 16, "n_starts": 2, "group_size": 4} if cfg.advantage == "group" else SMALL
    return cfg.replace(**{**base, **changes})


def trained_policy(cfg, updates: int = 2) -> list[torch.Tensor]:
    """The policy's parameters after `updates` updates of a fresh seed-0 trainer on CartPole."""
    torch.manual_seed(0)
    task = make_task("CartPole-v1", {}, cfg, seed=0, eval_episodes=1)
    trainer = Trainer(cfg, task, seed=0)
    for i in range(updates):
        trainer.update(task.collector.collect(task.policy, trainer.action_rng), progress=i / updates)
    task.collector.close()
    return [p.detach().clone() for p in task.policy.parameters()]


# ----------------------------------------------------------------------------------------------------------
# 1. The critic's gradient never scales the policy step


def test_a_huge_value_loss_leaves_the_policy_step_unchanged():
    # vf_coef = 1e6 makes the value-loss gradient ~1e6× the policy's; clipped jointly it would shrink every policy
    # step to ~0, clipped separately the policy moves exactly as it does with no critic term at all. One update:
    # within it the advantages are fixed, so the critic can reach the policy only through the clip.
    with_critic = trained_policy(small("ppo", vf_coef=1e6), updates=1)
    without = trained_policy(small("ppo", vf_coef=0.0), updates=1)
    initial = trained_policy(small("ppo"), updates=0)
    assert all(torch.equal(a, b) for a, b in zip(with_critic, without))
    assert not any(torch.equal(a, b) for a, b in zip(with_critic, initial))


def test_fit_critic_moves_only_the_critic_and_reports_the_critic_norm():
    cfg = small("critic")
    torch.manual_seed(0)
    task = make_task("CartPole-v1", {}, cfg, seed=0, eval_episodes=1)
    trainer = Trainer(cfg, task, seed=0)
    traj = task.collector.collect(task.policy, trainer.action_rng)
    row = trainer.update(traj, progress=0.0)
    task.collector.close()
    assert row["train/grad_norm"] > 0 and row["train/critic_grad_norm"] > 0
    assert row["train/grad_norm"] != row["train/critic_grad_norm"]


# ----------------------------------------------------------------------------------------------------------
# 2. Measurement has its own random streams

NOISE_COLUMNS = {"train/grad_cosine", "train/grad_rel_var", "train/grad_noise_trace", "train/grad_sq_norm"}


def training_rows(result, drop: set[str] = frozenset()) -> list[dict]:
    """Per-update metrics without the wall-clock columns and `drop`."""
    return [{k: v for k, v in row.items() if not k.startswith("time/") and k not in drop} for row in result.metrics]


def probe_setting_runs(setting: str, values: tuple[int, int]) -> dict:
    """A small `ppo` run on CartPole for each value of one probe setting; asserts they differ only in the noise
    columns (their training rows and evaluations are equal)."""
    runs = {
        v: train(RunSpec(small("ppo", **{setting: v}), "CartPole-v1", 0, 600, eval_episodes=2, eval_points=10))
        for v in values
    }
    a, b = (runs[v] for v in values)
    assert training_rows(a, NOISE_COLUMNS) == training_rows(b, NOISE_COLUMNS)
    assert a.evals == b.evals
    return runs


def test_noise_splits_change_only_the_gradient_noise_columns():
    runs = probe_setting_runs("noise_splits", (4, 8))
    assert training_rows(runs[4]) != training_rows(runs[8])  # the probe itself did change
    four, eight = (trained_policy(small("ppo", noise_splits=k)) for k in (4, 8))
    assert all(torch.equal(a, b) for a, b in zip(four, eight))


def test_noise_every_probes_the_first_and_every_kth_update_and_changes_only_the_noise_columns():
    runs = probe_setting_runs("noise_every", (1, 3))
    every_third = runs[3].metrics
    probed = [row for row in every_third if NOISE_COLUMNS <= row.keys()]
    updates = [row["update"] for row in every_third]
    assert len(updates) >= 7 and [row["update"] for row in probed] == updates[::3] == [1, 4, 7, *updates[9::3]]
    assert all(not NOISE_COLUMNS & row.keys() and row["time/probe_s"] == 0 for row in every_third if row not in probed)
    assert all(row["time/probe_s"] > 0 for row in probed)
    assert {c: probed[0][c] for c in NOISE_COLUMNS} == {c: runs[1].metrics[0][c] for c in NOISE_COLUMNS}
    trace, g2 = (sum(row[c] for row in probed) for c in ("train/grad_noise_trace", "train/grad_sq_norm"))
    scale = runs[3].summary["grad_noise_scale"]  # the run's noise scale: over the probed updates (NaN if Σ|G|² ≤ 0)
    assert scale == trace / g2 if g2 > 0 else math.isnan(scale)


def test_evaluation_settings_leave_training_unchanged():
    base = train(RunSpec(small("grpo"), "CartPole-v1", 0, 600, eval_episodes=2, eval_points=2))
    for episodes, points in ((5, 2), (2, 7)):
        other = train(RunSpec(small("grpo"), "CartPole-v1", 0, 600, eval_episodes=episodes, eval_points=points))
        assert training_rows(other) == training_rows(base), (episodes, points)


def test_an_update_draws_from_the_minibatch_stream_only_for_its_minibatches():
    # randperm's draws do not depend on K, so a probe sharing the stream would not show in the K = 4 vs 8 test;
    # here any extra draw from the minibatch stream (e.g. by the probe) moves its state.
    cfg = small("critic", value_epochs=3, minibatches=2)
    torch.manual_seed(0)
    task = make_task("CartPole-v1", {}, cfg, seed=0, eval_episodes=1)
    trainer = Trainer(cfg, task, seed=0)
    traj = task.collector.collect(task.policy, trainer.action_rng)
    task.collector.close()
    expected = torch.Generator().set_state(trainer.minibatch_rng.get_state())
    for _ in range(cfg.epochs + cfg.value_epochs):  # one shuffle per pass
        torch.randperm(traj.env_steps, generator=expected)
    trainer.update(traj, progress=0.0)
    assert torch.equal(trainer.minibatch_rng.get_state(), expected.get_state())


@pytest.mark.parametrize(
    "name, env_id, steps",
    [("ppo", "CartPole-v1", 1024), ("grpo", "CartPole-v1", 1200), ("pg", "CartPole-v1", 600), ("grpo", ENV_ID, 900)],
)
def test_the_probe_never_moves_training(name, env_id, steps, monkeypatch):
    # With the probe or without it (no probe at all: no forward, no backward, no draw from its stream), training
    # is the same bit for bit, for the MLP policies and TextGen's GRU alike.
    spec = RunSpec(algo_for(name, env_id, group_size=4), env_id, 0, steps, eval_episodes=2, eval_points=2)
    probed = train(spec)
    monkeypatch.setattr(train_module, "measure_gradient_noise", lambda *args: {})
    unprobed = train(spec)
    assert len(probed.metrics) > 1 and all(NOISE_COLUMNS <= row.keys() for row in probed.metrics)
    assert training_rows(probed, NOISE_COLUMNS) == training_rows(unprobed)
    assert probed.evals == unprobed.evals


@pytest.mark.parametrize("name, env_id, steps", [("ppo", "CartPole-v1", 1024), ("grpo", ENV_ID, 900)])
def test_the_probe_measures_the_same_in_one_stacked_pass_as_one_pass_per_minibatch(name, env_id, steps, monkeypatch):
    # The K minibatch gradients from one pass over K stacked copies of the policy (MLP and TextGen's GRU) equal
    # those of K separate passes bit for bit, so every gradient-noise column is the same.
    spec = RunSpec(algo_for(name, env_id, group_size=4), env_id, 0, steps, eval_episodes=2, eval_points=2)
    passes = []
    evaluate = train_module.stacked_evaluate
    monkeypatch.setattr(train_module, "stacked_evaluate", lambda *args: passes.append(1) or evaluate(*args))
    stacked = train(spec)
    assert len(passes) == len(stacked.metrics)  # one stacked pass per update's probe
    monkeypatch.setattr(train_module, "stackable", lambda policy, critic: False)  # one pass per minibatch
    one_by_one = train(spec)
    assert len(stacked.metrics) > 1 and all(NOISE_COLUMNS <= row.keys() for row in stacked.metrics)
    assert training_rows(stacked) == training_rows(one_by_one)


def test_every_run_records_what_measurement_cost():
    result = train(RunSpec(small("ppo"), "CartPole-v1", 0, 300, eval_episodes=1, eval_points=1))
    s = result.summary
    assert s["probe_time_s"] == sum(row["time/probe_s"] for row in result.metrics) > 0
    assert s["reference_time_s"] == sum(row["time/reference_s"] for row in result.metrics) > 0
    assert s["probe_time_s"] + s["reference_time_s"] < s["update_time_s"]  # both are parts of the update


def test_textgen_updates_use_the_collectors_reference_log_probs_with_the_same_bits_flops_and_times(monkeypatch):
    # TextGen's collector computes the reference's log-probabilities for its KL metrics; the trainer takes them
    # instead of a second forward pass. ppo_kl uses them twice (k1 in the reward, train/kl_ref in the loss).
    spec = RunSpec(algo_for("ppo_kl", ENV_ID), ENV_ID, 0, 6000, eval_episodes=2, eval_points=2)
    passes = []
    init = train_module.Trainer.__init__

    def counting_reference_passes(self, *args):
        init(self, *args)
        evaluate = self.reference.evaluate
        self.reference.evaluate = lambda units: passes.append(1) or evaluate(units)

    monkeypatch.setattr(train_module.Trainer, "__init__", counting_reference_passes)
    given = train(spec)
    given_passes = len(passes)
    trajectories = TextGenCollector.trajectories

    def without_reference(self, *args):
        traj = trajectories(self, *args)
        return traj if traj is None else dataclasses.replace(traj, reference_logp=None, reference_s=0.0)

    monkeypatch.setattr(TextGenCollector, "trajectories", without_reference)
    own = train(spec)
    updates = len(own.metrics)
    assert updates > 2 and len(passes) - given_passes == 2 * updates  # the trainer's own: reward KL and old_logp
    # given: only while the FLOP meter counts a new batch shape (full batches and the budget's cut one) at each site
    assert given_passes <= 4 < updates
    assert training_rows(given) == training_rows(own)  # train/flops included
    assert given.evals == own.evals
    assert all(row["time/reference_s"] > 0 for row in given.metrics)


# ----------------------------------------------------------------------------------------------------------
# 3. Budgets are kept


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", ENV_ID])
@pytest.mark.parametrize("name", NATIVE)
def test_no_run_trains_past_its_smoke_budget(name, env_id):
    budget = BUILTIN_ENVS[env_id].budgets["smoke"]
    cfg = algo_for(name, env_id, group_size=16)
    result = train(RunSpec(cfg, env_id, 0, budget, eval_episodes=1, eval_points=3))
    assert result.summary["status"] == "ok"
    assert result.metrics[-1]["env_steps"] == result.summary["env_steps"] <= budget
    assert result.evals[-1]["checkpoint"] == 3 and result.evals[-1]["env_steps"] == result.summary["env_steps"]
    if env_id != ENV_ID:  # Gymnasium batches are cut at the budget exactly, unless too few steps were left to split
        left = budget - result.summary["env_steps"]
        assert left == 0 or 0 < left < max(cfg.minibatches, cfg.noise_splits)


def test_a_cut_episode_ends_truncated_at_the_budget():
    envs = MemberEnvs([make_vec_env("CartPole-v1", 4, {}, fast=False)], 4)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, 8)
    generator = torch.Generator().manual_seed(0)
    traj = run_episodes(envs, lambda obs, members: policy.act(obs[0], generator)[None], [[1, 2, 3, 4]], np.array([23]))[
        0
    ]
    envs.close()
    assert traj.env_steps == 23
    assert traj.mask.sum(dim=1).tolist() == [6, 6, 6, 5]  # 5 whole vector steps, then the first 3 of the 4 envs
    last = traj.mask.sum(dim=1).long() - 1
    rows = torch.arange(4)
    assert (traj.ends[rows, last] == 1).all() and (traj.terminated[rows, last] == 0).all()
    assert traj.episode_returns == []  # nothing finished: cut episodes are not reported as returns


# ----------------------------------------------------------------------------------------------------------
# 4. TextGen's return is the gold reward


def test_textgen_final_return_is_the_final_gold_reward():
    cfg = algo_for("ppo", ENV_ID).replace(n_starts=4)
    result = train(RunSpec(cfg, ENV_ID, 0, 300, eval_episodes=1, eval_points=2))
    final = result.evals[-1]
    assert result.summary["final_return"] == final["eval/gold_mean"] == final["eval/return_mean"]
    assert final["eval/proxy_mean"] != final["eval/gold_mean"]  # the proxy keeps its own column
    paid = [row["rollout/ep_rew_mean"] for row in result.metrics]
    assert paid == pytest.approx([row["textgen/proxy_reward"] for row in result.metrics])  # training logs what is paid


# ----------------------------------------------------------------------------------------------------------
# 5. Compute over the whole run


def test_total_flops_are_the_sum_of_every_updates_count():
    result = train(RunSpec(small("critic"), "CartPole-v1", 0, 800, eval_episodes=1, eval_points=1))
    per_update = [row["train/flops"] for row in result.metrics]
    assert len(set(per_update)) > 1  # episodic batches differ in size, so their counts differ
    assert result.summary["flops_total"] == sum(per_update)
    assert result.summary["flops_per_update"] == sum(per_update) / len(per_update)
    assert result.summary["flops_per_env_step"] == sum(per_update) / result.summary["env_steps"]


@pytest.mark.parametrize("name", ["critic", "grpo"])
def test_cached_and_predicted_counts_equal_fresh_counts(name):
    def counts(fresh_every_update: bool) -> list[float]:
        cfg = small(name)
        torch.manual_seed(0)
        task = make_task("CartPole-v1", {}, cfg, seed=0, eval_episodes=1)
        trainer = Trainer(cfg, task, seed=0)
        out = []
        for _ in range(7):
            if fresh_every_update:
                trainer.flops = FlopMeter(predict=False)
            out.append(trainer.update(task.collector.collect(task.policy, trainer.action_rng), 0.0)["train/flops"])
        task.collector.close()
        assert fresh_every_update or trainer.flops.fresh < trainer.flops.calls / 2  # counts were reused
        return out

    assert counts(fresh_every_update=False) == counts(fresh_every_update=True)


def test_a_cached_count_equals_a_fresh_count_of_other_data_with_the_same_shapes():
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    meter = FlopMeter()
    batches = [torch.randn(30, 4, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    counts = [meter.measure("fwd_bwd", (30,), lambda x=x: net(x).square().sum().backward())[1] for x in batches]
    with FlopCounterMode(display=False) as counter:
        net(batches[1]).square().sum().backward()
    assert meter.fresh == 1 and counts[1] == counts[0] == counter.get_total_flops() > 0


def test_saved_bytes_of_a_linear_layer_are_its_input():
    layer = torch.nn.Linear(5, 3)
    x = torch.randn(7, 5)
    with SavedBytes(list(layer.parameters())) as saved:
        layer(x).sum()
    assert saved.bytes == 7 * 5 * 4  # addmm saves its input for the weight gradient; the weight is excluded


def test_update_memory_is_parameters_reference_optimizer_state_and_activations():
    for name, has_reference in (("critic", False), ("grpo", True)):
        s = train(RunSpec(small(name), "CartPole-v1", 0, 400, eval_episodes=1, eval_points=1)).summary
        params = s["params_policy"] + s["params_critic"]
        assert s["param_bytes"] == 4 * params
        assert s["reference_bytes"] == (4 * s["params_policy"] if has_reference else 0)
        tensors = 6 + (6 if s["params_critic"] else 0)  # weight + bias of three layers per network
        assert s["optimizer_state_bytes"] == 2 * 4 * params + 4 * tensors  # Adam: two moments + a step count
        assert s["activation_peak_bytes"] > 0
        parts = ("param_bytes", "reference_bytes", "optimizer_state_bytes", "activation_peak_bytes")
        assert s["update_memory_bytes"] == sum(s[k] for k in parts)
