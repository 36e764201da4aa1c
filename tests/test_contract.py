"""Contract: every algorithm runs on every built-in env, changes its parameters and yields finite metrics."""

import math

import pytest
import torch

from rlbench.algos import NATIVE, PRESETS
from rlbench.matrix import BUILTIN_ENVS
from rlbench.spec import RunSpec
from rlbench.task import make_task
from rlbench.train import Trainer, train

SMALL = {"n_steps": 16, "n_envs": 4, "n_starts": 4}

# Metrics that are undefined (NaN) by definition in some updates, and the condition that makes them so.
UNDEFINED_WHEN = {
    "rollout/ep_rew_mean": lambda row: row["rollout/episodes"] == 0,
    "rollout/ep_len_mean": lambda row: row["rollout/episodes"] == 0,
    "train/grad_cosine": lambda row: row["train/adv_std"] == 0,
    "train/grad_rel_var": lambda row: row["train/adv_std"] == 0,
    "train/grad_noise_trace": lambda row: row["train/adv_std"] == 0,
    "train/grad_sq_norm": lambda row: row["train/adv_std"] == 0,
    "train/explained_variance": lambda row: True,
}


def small(name: str):
    cfg = PRESETS[name]
    return cfg.replace(n_steps=16, n_starts=2, group_size=4) if cfg.advantage == "group" else cfg.replace(**SMALL)


@pytest.mark.parametrize("env_id", list(BUILTIN_ENVS))
@pytest.mark.parametrize("name", NATIVE)
def test_every_algorithm_updates_on_every_env(name, env_id):
    cfg = small(name)
    task = make_task(env_id, {}, cfg, seed=0, eval_episodes=2)
    trainer = Trainer(cfg, task, seed=0)
    before = [p.detach().clone() for p in trainer.params]
    rows = [trainer.update(task.collector.collect(task.policy, trainer.action_rng), progress=i / 2) for i in range(2)]
    task.collector.close()
    changed = [not torch.equal(b, p) for b, p in zip(before, trainer.params)]
    if all(row.get("train/frac_reward_zero_std") == 1.0 for row in rows):
        # Every group had equal returns (e.g. MountainCar's -200 for a random policy): no signal, no step.
        assert not any(changed), f"{name} on {env_id} moved without any learning signal"
    else:
        assert all(changed), f"{name} on {env_id}: {changed.count(False)} parameter tensors did not change"
    for row in rows:
        for key, value in row.items():
            assert math.isfinite(value) or UNDEFINED_WHEN.get(key, lambda r: False)(row), (name, env_id, key, value)


def test_train_records_every_metric_family():
    result = train(RunSpec(small("ppo"), "CartPole-v1", 1, 600, eval_episodes=2, eval_points=10))
    row = result.metrics[-1]
    for key in (
        "env_steps",
        "rollout/ep_rew_mean",
        "train/approx_kl",
        "train/clip_fraction",
        "train/entropy",
        "train/kl_ref",
        "train/explained_variance",
        "train/adv_std",
        "train/grad_cosine",
        "train/grad_rel_var",
        "train/grad_norm",
        "train/critic_grad_norm",
        "train/flops",
        "train/activation_bytes",
        "time/rollout_s",
        "time/update_s",
        "time/fps",
    ):
        assert key in row, key
    assert result.summary["status"] == "ok"
    assert result.summary["env_steps"] == 600  # the last batch is cut at the budget
    assert result.summary["flops_per_update"] > 0
    assert result.summary["params_policy"] == 4 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2
    assert result.summary["params_critic"] == 4 * 64 + 64 + 64 * 64 + 64 + 64 + 1
    assert result.evals[-1]["env_steps"] == result.summary["env_steps"]
    checkpoints = [row["checkpoint"] for row in result.evals]
    assert checkpoints[0] == 0 and checkpoints[-1] == 10 and checkpoints == sorted(set(checkpoints))


def test_an_update_crossing_several_checkpoints_evaluates_once():
    # 4 envs × 16 steps = 64 per update against a checkpoint every 12 steps: each update crosses ~5 of them.
    result = train(RunSpec(small("ppo"), "CartPole-v1", 0, 600, eval_episodes=1, eval_points=50))
    assert [row["update"] for row in result.evals] == list(range(len(result.evals)))


def test_seeds_do_not_share_environment_randomness():
    from rlbench.rollout import GymCollector

    starts = [GymCollector("Acrobot-v1", {}, small("ppo"), [seed]).obs for seed in (0, 1)]
    assert not any(torch.equal(a, b) for a in starts[0] for b in starts[1])
