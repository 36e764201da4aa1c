"""Seed batching: a seed's results do not depend on the batch it trains in (bit for bit), and a seed that fails
inside a batch ends alone with its own status while the others finish."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from rlbench import train as train_module
from rlbench.matrix import resolve_spec
from rlbench.spec import RunSpec, Status
from rlbench.train import Crash, train_batch

BUDGETS = {"CartPole-v1": 3000, "Acrobot-v1": 3000, "Pendulum-v1": 2400, "MountainCar-v0": 2400}


def spec(name: str, env_id: str, seed: int, steps: int | None = None) -> RunSpec:
    run = resolve_spec(name, env_id, 4, seed, steps or BUDGETS[env_id])
    return dataclasses.replace(run, eval_episodes=2, eval_points=2)


TIMING = {"wall_time_s", "env_steps_per_s", "peak_rss_mb", "flops_count_s"}


def measured(row: dict) -> dict:
    """A result row without its times (which differ between any two runs)."""
    return {k: v for k, v in row.items() if not (k.startswith("time/") or k.endswith("_time_s") or k in TIMING)}


def same(a: dict, b: dict) -> bool:
    """Equal as results: the same keys, every value equal bit for bit (NaN equals NaN)."""
    a, b = measured(a), measured(b)
    nan = {k for k, v in a.items() if isinstance(v, float) and math.isnan(v)}
    return a.keys() == b.keys() and all(
        (isinstance(b[k], float) and math.isnan(b[k])) if k in nan else a[k] == b[k] for k in a
    )


def assert_same_run(alone, batched) -> None:
    assert not isinstance(alone, Crash) and not isinstance(batched, Crash)
    assert len(alone.metrics) == len(batched.metrics) > 0
    for i, (x, y) in enumerate(zip(alone.metrics, batched.metrics)):
        assert same(x, y), f"update {i + 1} differs"
    assert all(same(x, y) for x, y in zip(alone.evals, batched.evals)) and len(alone.evals) == len(batched.evals)
    assert same(alone.summary, batched.summary)


@pytest.mark.parametrize(
    "name, env_id",
    [
        ("ppo", "CartPole-v1"),
        ("grpo", "CartPole-v1"),
        ("pg", "Acrobot-v1"),
        ("ppo_kl", "Acrobot-v1"),
        ("grpo_critic", "Pendulum-v1"),
        ("critic", "MountainCar-v0"),
    ],
)
def test_a_seed_trains_the_same_alone_and_in_a_batch_of_five(name: str, env_id: str) -> None:
    torch.set_num_threads(1)
    seeds = [3, 0, 7, 1, 4]
    batched = train_batch([spec(name, env_id, s) for s in seeds])
    for k in (0, 3):
        alone = train_batch([spec(name, env_id, seeds[k])])[0]
        assert_same_run(alone, batched[k])


def remember_seeds(monkeypatch) -> None:
    """Trainers keep their run's seed as `self.seed` (for the faults below to pick one seed)."""
    init = train_module.Trainer.__init__

    def init_remembering(self, cfg, task, seed, flops=None):
        init(self, cfg, task, seed, flops)
        self.seed = seed

    monkeypatch.setattr(train_module.Trainer, "__init__", init_remembering)


def test_a_seed_made_to_diverge_ends_diverged_while_the_rest_of_its_batch_finishes(monkeypatch) -> None:
    torch.set_num_threads(1)
    remember_seeds(monkeypatch)
    update = train_module.Trainer.update

    def update_poisoned_for_seed_2(self, traj, progress):
        if self.seed == 2 and progress > 0:
            with torch.no_grad():
                next(self.policy.parameters()).fill_(math.nan)
        return update(self, traj, progress)

    monkeypatch.setattr(train_module.Trainer, "update", update_poisoned_for_seed_2)
    results = train_batch([spec("ppo", "CartPole-v1", s) for s in range(4)])
    statuses = [r.summary["status"] for r in results]
    assert statuses == [Status.OK, Status.OK, Status.DIVERGED, Status.OK]
    assert "non-finite" in results[2].summary["reason"] or "became" in results[2].summary["reason"]
    assert results[2].summary["updates"] < results[0].summary["updates"]
    budget = BUDGETS["CartPole-v1"]  # at most a last batch too small to split is left unused
    assert all(budget - 16 < r.summary["env_steps"] <= budget for k, r in enumerate(results) if k != 2)
    monkeypatch.setattr(train_module.Trainer, "update", update)
    assert_same_run(train_batch([spec("ppo", "CartPole-v1", 3)])[0], results[3])


def test_a_seed_whose_env_pays_nan_ends_env_nan_and_a_crashing_seed_fails_alone(monkeypatch) -> None:
    torch.set_num_threads(1)
    from rlbench.rollout import _Recorder

    add = _Recorder.add
    calls = {"n": 0}

    def add_with_a_nan_for_member_1(self, obs, act, rew, term, trunc, valid, next_obs):
        calls["n"] += self.members == 3  # the batch's recorder, not an evaluation's
        if self.members == 3 and calls["n"] == 40:
            rew = np.array(rew, dtype=np.float64)
            rew[1 * self.streams] = np.nan
        return add(self, obs, act, rew, term, trunc, valid, next_obs)

    monkeypatch.setattr(_Recorder, "add", add_with_a_nan_for_member_1)
    remember_seeds(monkeypatch)
    update = train_module.Trainer.update

    def update_crashing_for_seed_2(self, traj, progress):
        if self.seed == 2:
            raise ZeroDivisionError("seed 2 crashed")
        return update(self, traj, progress)

    monkeypatch.setattr(train_module.Trainer, "update", update_crashing_for_seed_2)
    results = train_batch([spec("ppo", "CartPole-v1", s) for s in range(3)])
    assert not isinstance(results[0], Crash), results[0].traceback
    assert results[0].summary["status"] == Status.OK
    assert results[1].summary["status"] == Status.ENV_NAN
    assert "non-finite reward" in results[1].summary["reason"]
    assert isinstance(results[2], Crash) and "seed 2 crashed" in results[2].reason


def test_a_batch_refuses_runs_of_different_cells() -> None:
    with pytest.raises(ValueError, match="one matrix cell"):
        train_batch([spec("ppo", "CartPole-v1", 0), spec("pg", "CartPole-v1", 1)])
