"""Measurement and fairness of the training loop: separate clipping, RNG streams, budgets, TextGen's return,
whole-run FLOPs and memory."""

from __future__ import annotations

import torch

from rlbench.algos import PRESETS
from rlbench.task import make_task
from rlbench.train import Trainer, train

SMALL = {"n_steps": 16, "n_envs": 4}


def small(name: str, **changes):
    cfg = PRESETS[name]
    base = {"n_steps": 16, "n_envs": 2, "group_size": 4} if cfg.advantage == "group" else SMALL
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


def test_noise_splits_change_only_the_gradient_noise_columns():
    runs = {k: train(small("ppo", noise_splits=k), "CartPole-v1", {}, 0, 600, eval_episodes=2) for k in (4, 8)}
    assert training_rows(runs[4], NOISE_COLUMNS) == training_rows(runs[8], NOISE_COLUMNS)
    assert runs[4].evals == runs[8].evals
    assert training_rows(runs[4]) != training_rows(runs[8])  # the probe itself did change
    four, eight = (trained_policy(small("ppo", noise_splits=k)) for k in (4, 8))
    assert all(torch.equal(a, b) for a, b in zip(four, eight))


def test_evaluation_settings_leave_training_unchanged():
    base = train(small("grpo"), "CartPole-v1", {}, 0, 600, eval_episodes=2, eval_points=2)
    for episodes, points in ((5, 2), (2, 7)):
        other = train(small("grpo"), "CartPole-v1", {}, 0, 600, eval_episodes=episodes, eval_points=points)
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
