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
from rlbench.policies import MLPCritic, MLPPolicy
from rlbench.rollout import GymCollector, MemberEnvs, RunFault, Trajectories, make_vec_env, run_episodes

EVAL_SEED_BASE = 2**31 - 1
"""Evaluation episode i resets with seed EVAL_SEED_BASE − i; training seeds are drawn below 2**30."""


class Collector(Protocol):
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


def make_task(
    env_id: str,
    env_kwargs: dict[str, Any],
    cfg: AlgoConfig,
    seed: int,
    eval_episodes: int,
    collector: GymCollector | None = None,
) -> Task:
    """The env's own builder (rlbench.registry), else an MLP task for a Gymnasium env (whose `collector` may be
    shared by a seed batch: rlbench.train.train_batch)."""
    target = registry.task_builder(env_id)
    if target is None:
        return gym_task(env_id, env_kwargs, cfg, seed, eval_episodes, collector)
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(env_id, env_kwargs, cfg, seed, eval_episodes)


def gym_task(
    env_id: str,
    env_kwargs: dict[str, Any],
    cfg: AlgoConfig,
    seed: int,
    eval_episodes: int,
    collector: GymCollector | None = None,
) -> Task:
    """MLP policy (and critic) on a Gymnasium env with a flat Box/Discrete observation space; `collector`: a
    GymCollector serving this seed among others (default: its own)."""
    collector = collector or GymCollector(env_id, env_kwargs, cfg, [seed])
    env = collector.envs
    policy = MLPPolicy(env.single_observation_space, env.single_action_space, cfg.hidden)
    critic = MLPCritic(env.single_observation_space, cfg.hidden) if cfg.uses_critic else None
    return Task(
        policy=policy, critic=critic, collector=collector, evaluate=evaluator(env_id, env_kwargs, eval_episodes)
    )


def evaluator(env_id: str, env_kwargs: dict[str, Any], eval_episodes: int) -> Callable[[Any], dict[str, float]]:
    """rlbench's held-out evaluation of a Gymnasium env: episode i resets with seed EVAL_SEED_BASE − i, the model's
    `act(obs, generator, deterministic=True)` picks every action; returns eval/return_mean and eval/return_std."""
    eval_env = MemberEnvs([make_vec_env(env_id, eval_episodes, env_kwargs, fast=False)], eval_episodes)
    eval_seeds = [EVAL_SEED_BASE - i for i in range(eval_episodes)]

    def evaluate(model: Any) -> dict[str, float]:
        def act(obs: torch.Tensor, members: tuple[int, ...]) -> torch.Tensor:
            return model.act(obs[0], torch.Generator(), deterministic=True)[None]

        episodes = run_episodes(eval_env, act, [eval_seeds])[0]
        if isinstance(episodes, RunFault):
            raise episodes
        returns = episodes.episode_returns
        return {"eval/return_mean": float(np.mean(returns)), "eval/return_std": float(np.std(returns))}

    return evaluate


class Evaluations:
    """When a run evaluates and what it recorded (evals.parquet's rows): checkpoint 0 before training, checkpoint
    k after the first update that reaches k/points of the budget (an update crossing several evaluates once, for
    the last), and checkpoint `points` at the end of training if no update reached it, so every curve has points
    at the same env steps whatever the batch size, and its last point is the trained policy."""

    def __init__(self, evaluate: Callable[[Any], dict[str, float]], total_steps: int, points: int) -> None:
        self.evaluate, self.total_steps, self.points = evaluate, total_steps, points
        self.next = 1
        self.rows: list[dict] = []

    def _record(self, model: Any, update: int, env_steps: int, checkpoint: int) -> None:
        self.rows.append({"update": update, "env_steps": env_steps, "checkpoint": checkpoint, **self.evaluate(model)})

    def before_training(self, model: Any) -> None:
        """Checkpoint 0."""
        self._record(model, 0, 0, 0)

    def after_update(self, model: Any, update: int, env_steps: int) -> None:
        """The checkpoint due once update `update` brought the run to env_steps, if one is."""
        if env_steps * self.points >= self.total_steps * self.next:
            checkpoint = min(self.points, env_steps * self.points // self.total_steps)
            self._record(model, update, env_steps, checkpoint)
            self.next = checkpoint + 1

    def at_end(self, model: Any, update: int, env_steps: int) -> None:
        """The last checkpoint, unless an update already reached it."""
        if self.next <= self.points:
            self._record(model, update, env_steps, self.points)

    def final(self, update: int) -> dict:
        """The evaluation of the policy after update `update` if it was the last recorded, else {}."""
        return self.rows[-1] if self.rows and self.rows[-1]["update"] == update else {}
