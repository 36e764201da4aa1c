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
from rlbench.rollout import GymCollector, Trajectories, make_vec_env, run_episodes

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


def make_task(env_id: str, env_kwargs: dict[str, Any], cfg: AlgoConfig, seed: int, eval_episodes: int) -> Task:
    """The env's own builder (rlbench.registry), else an MLP task for a Gymnasium env."""
    target = registry.task_builder(env_id)
    builder = gym_task
    if target is not None:
        module, name = target.split(":")
        builder = getattr(importlib.import_module(module), name)
    return builder(env_id, env_kwargs, cfg, seed, eval_episodes)


def gym_task(env_id: str, env_kwargs: dict[str, Any], cfg: AlgoConfig, seed: int, eval_episodes: int) -> Task:
    """MLP policy (and critic) on a Gymnasium env with a flat Box/Discrete observation space."""
    collector = GymCollector(env_id, env_kwargs, cfg, seed)
    env = collector.env
    policy = MLPPolicy(env.single_observation_space, env.single_action_space, cfg.hidden)
    critic = MLPCritic(env.single_observation_space, cfg.hidden) if cfg.uses_critic else None
    eval_env = make_vec_env(env_id, eval_episodes, env_kwargs, fast=False)
    eval_seeds = [EVAL_SEED_BASE - i for i in range(eval_episodes)]

    def evaluate(model: nn.Module) -> dict[str, float]:
        returns = run_episodes(eval_env, model, eval_seeds, torch.Generator(), deterministic=True).episode_returns
        return {"eval/return_mean": float(np.mean(returns)), "eval/return_std": float(np.std(returns))}

    return Task(policy=policy, critic=critic, collector=collector, evaluate=evaluate)
