"""Seed batching: a seed's results do not depend on the batch it trains in (bit for bit), and a seed that fails
inside a batch ends alone with its own status while the others finish."""

import dataclasses
import functools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlbench import train as train_module
from rlbench.matrix import resolve_spec
from rlbench.policies import MLPCritic, MLPPolicy
from rlbench.seed_stack import SeedStack
from rlbench.spec import RunSpec, Status
from rlbench.train import Crash, train_batch

TEXTGEN = "rlbench/TextGen-v0"
BUDGETS = {"CartPole-v1": 3000, "Acrobot-v1": 3000, "Pendulum-v1": 2400, "MountainCar-v0": 2400, TEXTGEN: 3000}


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
        ("grpo", TEXTGEN),
        ("ppo_kl", TEXTGEN),
        ("critic", TEXTGEN),
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
    prepare = train_module.Trainer.prepare

    def prepare_poisoned_for_seed_2(self, traj, progress):
        if self.seed == 2 and progress > 0:
            with torch.no_grad():
                next(self.policy.parameters()).fill_(math.nan)
        return prepare(self, traj, progress)

    monkeypatch.setattr(train_module.Trainer, "prepare", prepare_poisoned_for_seed_2)
    results = train_batch([spec("ppo", "CartPole-v1", s) for s in range(4)])
    statuses = [r.summary["status"] for r in results]
    assert statuses == [Status.OK, Status.OK, Status.DIVERGED, Status.OK]
    assert "non-finite" in results[2].summary["reason"] or "became" in results[2].summary["reason"]
    assert results[2].summary["updates"] < results[0].summary["updates"]
    budget = BUDGETS["CartPole-v1"]  # at most a last batch too small to split is left unused
    assert all(budget - 16 < r.summary["env_steps"] <= budget for k, r in enumerate(results) if k != 2)
    monkeypatch.setattr(train_module.Trainer, "prepare", prepare)
    assert_same_run(train_batch([spec("ppo", "CartPole-v1", 3)])[0], results[3])


def test_a_seed_whose_env_pays_nan_ends_env_nan_and_a_crashing_seed_fails_alone(monkeypatch) -> None:
    torch.set_num_threads(1)
    from rlbench.rollout import _Recorder

    add = _Recorder.add
    calls = {"n": 0}

    def add_with_a_nan_for_member_1(self, obs, act, rew, term, trunc, valid, next_obs):
        collecting = self.every_obs  # steps-mode collection's recorder, not an evaluation's
        calls["n"] += collecting
        if collecting and calls["n"] == 40:
            rew = np.array(rew, dtype=np.float64)
            rew[1 * self.streams] = np.nan
        return add(self, obs, act, rew, term, trunc, valid, next_obs)

    monkeypatch.setattr(_Recorder, "add", add_with_a_nan_for_member_1)
    remember_seeds(monkeypatch)
    prepare = train_module.Trainer.prepare

    def prepare_crashing_for_seed_2(self, traj, progress):
        if self.seed == 2:
            raise ZeroDivisionError("seed 2 crashed")
        return prepare(self, traj, progress)

    monkeypatch.setattr(train_module.Trainer, "prepare", prepare_crashing_for_seed_2)
    results = train_batch([spec("ppo", "CartPole-v1", s) for s in range(3)])
    assert not isinstance(results[0], Crash), results[0].traceback
    assert results[0].summary["status"] == Status.OK
    assert results[1].summary["status"] == Status.ENV_NAN
    assert "non-finite reward" in results[1].summary["reason"]
    assert isinstance(results[2], Crash) and "seed 2 crashed" in results[2].reason


def test_a_batch_refuses_runs_of_different_cells() -> None:
    with pytest.raises(ValueError, match="one matrix cell"):
        train_batch([spec("ppo", "CartPole-v1", 0), spec("pg", "CartPole-v1", 1)])


def test_steps_mode_and_textgen_seeds_take_their_optimizer_steps_together(monkeypatch) -> None:
    torch.set_num_threads(1)
    together = train_module.update_together
    calls = []

    def counting(trainers, units):
        calls.append(len(trainers))
        return together(trainers, units)

    monkeypatch.setattr(train_module, "update_together", counting)
    results = train_batch([spec("ppo", "Pendulum-v1", s) for s in range(3)])
    assert calls == [3] * results[0].summary["updates"]
    calls.clear()
    results = train_batch([spec("grpo", TEXTGEN, s) for s in range(3)])
    # every update but the last, whose completions are cut to each seed's own budget left
    assert calls == [3] * (results[0].summary["updates"] - 1) and len(calls) > 2
    calls.clear()
    train_batch([spec("grpo", "CartPole-v1", s) for s in range(3)])  # episodes: each seed's own unit count
    assert calls == []


def test_a_seed_stack_steps_each_seed_as_its_own_adam_would() -> None:
    """Gaussian and categorical policies with a critic, seeds at different learning rates: after three stacked
    steps every seed's parameters and Adam moments equal its own modules stepped alone, bit for bit."""
    torch.set_num_threads(1)
    for env_id in ("Pendulum-v1", "CartPole-v1"):
        cfg = resolve_spec("ppo", env_id, 4, 0, 1000).algo
        env = gym.make(env_id)
        obs_space, act_space = env.observation_space, env.action_space

        alone = [networks(obs_space, act_space, s) for s in range(3)]
        together = [networks(obs_space, act_space, s) for s in range(3)]
        optimizers = [
            [
                torch.optim.Adam([*p.parameters(), *c.parameters()], lr=1e-3 * (k + 1), eps=1e-5)
                for k, (p, c) in enumerate(nets)
            ]
            for nets in (alone, together)
        ]
        stack = SeedStack([p for p, _ in together], [c for _, c in together], optimizers[1])
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            mbs = [minibatch(obs_space, act_space, 96, gen) for _ in range(3)]
            for (policy, critic), optimizer, mb in zip(alone, optimizers[0], mbs):
                logp, entropy = policy.evaluate(mb)
                loss, _ = train_module.minibatch_loss(cfg, logp, entropy, critic.value(mb), mb)
                optimizer.zero_grad()
                loss.backward()
                for part in (policy.parameters(), critic.parameters()):
                    torch.nn.utils.clip_grad_norm_(part, cfg.max_grad_norm)
                optimizer.step()
            mb = {key: torch.stack([m[key] for m in mbs]) for key in mbs[0]}
            logp, entropy = stack.evaluate(mb)
            loss_fn = torch.func.vmap(functools.partial(train_module.minibatch_loss, cfg))
            stack.step(loss_fn(logp, entropy, stack.value(mb), mb)[0], cfg.max_grad_norm)
        stack.write_back()
        for (p1, c1), (p2, c2), o1, o2 in zip(alone, together, *optimizers):
            for a, b in zip([*p1.parameters(), *c1.parameters()], [*p2.parameters(), *c2.parameters()]):
                assert torch.equal(a, b)
                assert all(torch.equal(o1.state[a][key], o2.state[b][key]) for key in ("step", "exp_avg", "exp_avg_sq"))


def networks(obs_space, act_space, seed: int) -> tuple[MLPPolicy, MLPCritic]:
    torch.manual_seed(seed)
    return MLPPolicy(obs_space, act_space, 64), MLPCritic(obs_space, 64)


def minibatch(obs_space, act_space, rows: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random minibatch units for `minibatch_loss` (a few slots invalid)."""
    if isinstance(act_space, gym.spaces.Discrete):
        act = torch.randint(0, int(act_space.n), (rows,), generator=gen)
    else:
        act = torch.randn(rows, act_space.shape[0], generator=gen)
    units = {"obs": torch.randn(rows, obs_space.shape[0], generator=gen), "act": act}
    for key in ("adv", "targets"):
        units[key] = torch.randn(rows, generator=gen)
    for key in ("logp_old", "ref_logp"):
        units[key] = -torch.rand(rows, generator=gen) - 0.5
    units["mask"] = (torch.rand(rows, generator=gen) > 0.05).float()
    return units
