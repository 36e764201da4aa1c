"""A Task bundles what the training loop needs from an environment: policy, critic, collector, evaluator."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from rlbench import registry
from rlbench.algos.config import AlgoConfig
from rlbench.policies import MLPCritic, MLPPolicy, StackedPolicies
from rlbench.rollout import GymCollector, MemberEnvs, RunFault, Trajectories, run_episodes

EVAL_SEED_BASE = 2**31 - 1
"""Evaluation episode i resets with seed EVAL_SEED_BASE − i; training seeds are drawn below 2**30."""


class Collector(Protocol):
    """Collects a run's batches. A collector class may also offer `collect_together(collectors, policies,
    generators, budgets)`, the batches of several seeds' collectors of one matrix cell at once, each what its
    own `collect` would give (TextGen's generates every seed's completions in one batched pass)."""

    def collect(self, policy: nn.Module, generator: torch.Generator, budget: int | None = None) -> Trajectories | None:
        """One update's batch with at most `budget` env steps when given (the rule: rlbench.rollout), or None
        when no batch fits in the budget."""
        ...

    def close(self) -> None: ...


@dataclass
class Task:
    """`policy` has act/evaluate, `critic` has value (None when the algorithm has no critic)."""

    policy: nn.Module
    critic: nn.Module | None
    collector: Collector
    evaluate: Callable[[nn.Module], dict[str, float]]
    """Runs the evaluation episodes on held-out seeds; returns at least eval/return_mean and eval/return_std."""


@dataclass
class SharedEnvs:
    """The envs a seed batch's Gymnasium tasks share (rlbench.train.train_batch): one collector, one evaluator."""

    collector: GymCollector
    evaluator: GymEvaluator

    def close(self) -> None:
        self.collector.close()
        self.evaluator.close()


def make_task(
    env_id: str,
    env_kwargs: dict[str, Any],
    cfg: AlgoConfig,
    seed: int,
    eval_episodes: int,
    shared: SharedEnvs | None = None,
) -> Task:
    """The env's own builder (rlbench.registry), else an MLP task for a Gymnasium env (whose envs may be `shared`
    by a seed batch: rlbench.train.train_batch)."""
    target = registry.task_builder(env_id)
    if target is None:
        return gym_task(env_id, env_kwargs, cfg, seed, eval_episodes, shared)
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(env_id, env_kwargs, cfg, seed, eval_episodes)


def gym_task(
    env_id: str,
    env_kwargs: dict[str, Any],
    cfg: AlgoConfig,
    seed: int,
    eval_episodes: int,
    shared: SharedEnvs | None = None,
) -> Task:
    """MLP policy (and critic) on a Gymnasium env with a flat Box/Discrete observation space; `shared`: the
    collector and evaluator serving this seed among others (default: its own)."""
    collector = shared.collector if shared else GymCollector(env_id, env_kwargs, cfg, [seed])
    env = collector.envs
    policy = MLPPolicy(env.single_observation_space, env.single_action_space, cfg.hidden)
    critic = MLPCritic(env.single_observation_space, cfg.hidden) if cfg.uses_critic else None
    evaluate = shared.evaluator if shared else GymEvaluator(env_id, env_kwargs, eval_episodes)
    return Task(policy=policy, critic=critic, collector=collector, evaluate=evaluate)


class GymEvaluator:
    """rlbench's held-out evaluation on a Gymnasium env, for the models of up to `members` seeds at once: each
    model's episode i resets with seed EVAL_SEED_BASE − i and every action is the model's mode
    (`act(obs, generator, deterministic=True)`); returns eval/return_mean and eval/return_std. The members' envs
    step together and rlbench MLP policies act as one batched computation (StackedPolicies), so a model's
    evaluation does not depend on the others evaluated with it."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], eval_episodes: int, members: int = 1) -> None:
        self.envs = MemberEnvs.make(env_id, env_kwargs, eval_episodes, members, fast=False)
        self.seeds = [EVAL_SEED_BASE - i for i in range(eval_episodes)]

    def __call__(self, model: Any) -> dict[str, float]:
        """One model's evaluation (as member 0); raises the RunFault of an env that gave a non-finite value."""
        out = self.many({0: model})[0]
        if isinstance(out, RunFault):
            raise out
        return out

    def many(self, models: dict[int, Any]) -> dict[int, dict[str, float] | RunFault]:
        """The evaluation of each member m's model models[m] (or the RunFault its env gave it)."""
        if all(isinstance(model, MLPPolicy) for model in models.values()):
            first = next(iter(models.values()))
            stacked = StackedPolicies([models.get(m, first) for m in range(self.envs.members)])
            generators = [torch.Generator()] * self.envs.members

            def act(obs: torch.Tensor, members: tuple[int, ...]) -> torch.Tensor:
                return stacked.act(obs, members, generators[: len(members)], deterministic=True)

        else:

            def act(obs: torch.Tensor, members: tuple[int, ...]) -> torch.Tensor:
                return torch.stack(
                    [models[m].act(x, torch.Generator(), deterministic=True) for x, m in zip(obs, members)]
                )

        seeds = [self.seeds if m in models else None for m in range(self.envs.members)]
        out: dict[int, dict[str, float] | RunFault] = {}
        for m, episodes in run_episodes(self.envs, act, seeds).items():
            if isinstance(episodes, RunFault):
                out[m] = episodes
                continue
            returns = episodes.episode_returns
            out[m] = {"eval/return_mean": float(np.mean(returns)), "eval/return_std": float(np.std(returns))}
        return out

    def close(self) -> None:
        self.envs.close()


class Evaluations:
    """When a run evaluates and what it recorded (evals.parquet's rows): checkpoint 0 before training, checkpoint
    k after the first update that reaches k/points of the budget (an update crossing several evaluates once, for
    the last), and checkpoint `points` at the end of training if no update reached it, so every curve has points
    at the same env steps whatever the batch size, and its last point is the trained policy. `due_*` say which
    checkpoint is due and `record` keeps its evaluation (a seed batch evaluates its seeds together); the other
    methods evaluate with `evaluate` themselves."""

    def __init__(self, evaluate: Callable[[Any], dict[str, float]], total_steps: int, points: int) -> None:
        self.evaluate, self.total_steps, self.points = evaluate, total_steps, points
        self.next = 1
        self.rows: list[dict] = []

    def due_after(self, env_steps: int) -> int | None:
        """The checkpoint due once an update brought the run to env_steps, if one is."""
        if env_steps * self.points >= self.total_steps * self.next:
            return min(self.points, env_steps * self.points // self.total_steps)
        return None

    def due_at_end(self) -> int | None:
        """The last checkpoint, unless an update already reached it."""
        return self.points if self.next <= self.points else None

    def record(self, update: int, env_steps: int, checkpoint: int, metrics: dict[str, float]) -> None:
        self.rows.append({"update": update, "env_steps": env_steps, "checkpoint": checkpoint, **metrics})
        self.next = checkpoint + 1

    def before_training(self, model: Any) -> None:
        """Checkpoint 0."""
        self.record(0, 0, 0, self.evaluate(model))

    def after_update(self, model: Any, update: int, env_steps: int) -> None:
        """The checkpoint due once update `update` brought the run to env_steps, if one is."""
        checkpoint = self.due_after(env_steps)
        if checkpoint is not None:
            self.record(update, env_steps, checkpoint, self.evaluate(model))

    def at_end(self, model: Any, update: int, env_steps: int) -> None:
        """The last checkpoint, unless an update already reached it."""
        checkpoint = self.due_at_end()
        if checkpoint is not None:
            self.record(update, env_steps, checkpoint, self.evaluate(model))

    def final(self, update: int) -> dict:
        """The evaluation of the policy after update `update` if it was the last recorded, else {}."""
        return self.rows[-1] if self.rows and self.rows[-1]["update"] == update else {}
