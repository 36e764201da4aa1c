"""Collecting trajectories from Gymnasium vector envs into the [N streams, T steps] layout the loop consumes.

Vector envs autoreset in NEXT_STEP mode: the step after an episode ends only resets that env, so it is not a
transition. It is kept in the layout with mask 0, and the observation stored in its column is the episode's
final observation, which is exactly what V(s_{t+1}) of the last real step needs at a truncation.

Budgets: a collector given `budget` records at most that many valid steps. The vector step that reaches it
counts only its first sub-envs (in index order) up to the budget, collection stops there, and every episode
still running ends at its last counted step as truncated (`ends` set, `terminated` not): a critic bootstraps
from the next stored observation, exactly as at a time limit; the group advantage, having no critic, scores a
cut episode by its partial return (only in a run's last batch). Transitions past the budget are never trained on.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlbench.algos.config import AlgoConfig
from rlbench.envs.classic_vector import VECTOR_ENTRY_POINTS as BATCHED_CLASSIC
from rlbench.envs.classic_vector import BatchedClassicEnv
from rlbench.policies import MLPPolicy, encode_obs
from rlbench.rng import np_stream
from rlbench.spec import Status


class RunFault(Exception):
    """A numerical fault that ends a run with an outcome status (`env_nan` or `diverged`), not a crash.

    `env_step` counts the valid env steps of the current rollout up to the fault (the loop adds the run's
    total so far); None when the fault is not tied to one env step.
    """

    def __init__(self, status: Status, message: str, env_step: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.env_step = env_step


@dataclass
class Trajectories:
    """One update's experience. Per-step tensors are [N, T, ...]; `mask` marks real transitions."""

    inputs: dict[str, Tensor]
    """What policy.evaluate and critic.value read (e.g. obs, act), each [N, T, ...]."""
    rewards: Tensor
    terminated: Tensor
    """1 where the episode ended in a terminal state (no bootstrap)."""
    ends: Tensor
    """1 where the return recursion restarts: episode end (terminal or truncated) or the rollout's last step."""
    mask: Tensor
    last_inputs: dict[str, Tensor] | None
    """Critic inputs for the state after the last column ([N, ...]), or None when every stream is terminal."""
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    sequence_units: bool = False
    """Minibatch whole streams (token sequences) instead of individual valid steps."""
    extra: dict[str, float] = field(default_factory=dict)
    """Env-specific per-update metrics (e.g. TextGen's proxy and gold rewards)."""

    @property
    def env_steps(self) -> int:
        return int(self.mask.sum().item())

    def stream_returns(self) -> Tensor:
        """Undiscounted return of each stream, [N] (one episode per stream in `episodes` mode)."""
        return (self.rewards * self.mask).sum(dim=1)

    def episode_ids(self) -> Tensor:
        """[N, T] id of the episode each step belongs to, unique across streams (a new one after each end)."""
        starts = torch.zeros_like(self.ends)
        starts[:, 1:] = self.ends[:, :-1]
        local = starts.cumsum(dim=1)
        width = local[:, -1] + 1
        return (local + (width.cumsum(0) - width)[:, None]).long()

    def units(self, per_step: dict[str, Tensor]) -> dict[str, Tensor]:
        """Inputs plus `per_step` [N, T] tensors as minibatch units: whole streams, or flat valid steps that
        carry their episode id as `seq` (for per-sequence loss aggregation)."""
        merged = {**self.inputs, **per_step, "mask": self.mask}
        if self.sequence_units:
            return merged
        valid = self.mask.bool()
        return {key: value[valid] for key, value in {**merged, "seq": self.episode_ids()}.items()}


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of `id` or `module:id` (Gymnasium's syntax: importing the module registers the id)."""
    module, _, name = env_id.rpartition(":")
    if module:
        importlib.import_module(module)
    return gym.spec(name)


PER_ENV_SEEDED = (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv, BatchedClassicEnv)
"""Vector envs whose `reset(seed=[s_0, …])` seeds sub-env i exactly like a scalar env reset with s_i."""


def is_composite(space: gym.Space) -> bool:
    """Tuple and Dict observations, which rlbench trains on flattened by Gymnasium's FlattenObservation (each
    Discrete part one-hot, each Box part raveled, concatenated into one Box)."""
    return isinstance(space, (gym.spaces.Tuple, gym.spaces.Dict))


def make_vec_env(env_id: str, num_envs: int, env_kwargs: dict, fast: bool) -> gym.vector.VectorEnv:
    """A NEXT_STEP-autoreset vector env. Acrobot, MountainCar and Pendulum always get rlbench's batched
    implementations (the same transitions as Gymnasium's scalar envs, per-sub-env seeding); otherwise `fast` uses
    the env's own vector implementation when it has one (CartPole's, whose sub-envs share one generator).
    Tuple and Dict observations come flattened (`is_composite`)."""
    spec = env_spec(env_id)
    if spec.id in BATCHED_CLASSIC:
        batched = dataclasses.replace(spec, vector_entry_point=BATCHED_CLASSIC[spec.id])
        return gym.make_vec(batched, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)
    mode = "vector_entry_point" if fast and spec.vector_entry_point is not None else "sync"
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, **env_kwargs)
    return gym.wrappers.vector.FlattenObservation(env) if is_composite(env.single_observation_space) else env


def _to_env_action(space: gym.Space, action: Tensor) -> np.ndarray:
    """Policy output as the env's action: Box actions clipped to bounds; category indices shifted by `start`."""
    array = action.numpy()
    if isinstance(space, gym.spaces.Box):
        return np.clip(array, space.low, space.high).astype(space.dtype)
    return (array + np.asarray(space.start)).astype(space.dtype)


class _Recorder:
    """Accumulates per-step arrays of a vector env and stacks them as [N, T] tensors."""

    def __init__(self, num_envs: int, carry: _Recorder | None = None, every_obs: bool = False) -> None:
        """`carry`: the previous update's recorder, whose unfinished episodes continue here. `every_obs`: every
        returned observation is used (autoreset continues episodes), not only those after a real transition."""
        self.every_obs = every_obs
        self.obs, self.act, self.rew, self.term, self.end, self.valid = [], [], [], [], [], []
        self.running_return = np.zeros(num_envs) if carry is None else carry.running_return
        self.running_length = np.zeros(num_envs, dtype=np.int64) if carry is None else carry.running_length
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.steps = 0
        """Valid steps recorded so far."""

    def add(self, obs: Tensor, act: Tensor, rew, term, trunc, valid: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """Record one vector step; raise RunFault(env_nan) on a non-finite reward or next observation."""
        rew = np.asarray(rew, dtype=np.float64)
        flat = np.asarray(next_obs, dtype=np.float64).reshape(len(valid), -1)
        used = valid | self.every_obs
        for what, bad in (
            ("reward", ~np.isfinite(rew) & valid),
            ("observation", ~np.isfinite(flat).all(axis=1) & used),
        ):
            if bad.any():
                before = int(sum(v.sum() for v in self.valid))
                env_step = before + int(valid[: int(np.flatnonzero(bad)[0]) + 1].sum())
                raise RunFault(Status.ENV_NAN, f"non-finite {what} from the environment", env_step)
        rew = np.where(valid, rew, 0.0)
        done = (np.asarray(term) | np.asarray(trunc)) & valid
        self.obs.append(obs)
        self.act.append(act)
        self.rew.append(rew)
        self.term.append(np.asarray(term) & valid)
        self.end.append(done | ~valid)
        self.valid.append(valid)
        self.steps += int(valid.sum())
        self.running_return += rew
        self.running_length += valid
        for i in np.flatnonzero(done):
            self.returns.append(float(self.running_return[i]))
            self.lengths.append(int(self.running_length[i]))
            self.running_return[i] = 0.0
            self.running_length[i] = 0
        return done

    def cut(self, streams: np.ndarray) -> None:
        """End the running episodes of `streams` ([N] bool) at their last recorded valid step, as truncated."""
        for i in np.flatnonzero(streams):
            for valid, end in zip(reversed(self.valid), reversed(self.end)):
                if valid[i]:
                    end[i] = True
                    break

    def stack(self, last_inputs: dict[str, Tensor] | None, close_last: bool) -> Trajectories:
        def t(rows, dtype=torch.float32):
            return torch.as_tensor(np.stack(rows, axis=1), dtype=dtype)

        ends = t(self.end)
        if close_last:
            ends[:, -1] = 1.0
        return Trajectories(
            inputs={"obs": torch.stack(self.obs, dim=1), "act": torch.stack(self.act, dim=1)},
            rewards=t(self.rew),
            terminated=t(self.term),
            ends=ends,
            mask=t(self.valid),
            last_inputs=last_inputs,
            episode_returns=self.returns,
            episode_lengths=self.lengths,
        )


def within(valid: np.ndarray, room: int | None) -> np.ndarray:
    """`valid` [N] bool keeping only its first `room` True entries (all of them when room is None)."""
    return valid if room is None else valid & (np.cumsum(valid) <= room)


def run_episodes(
    env: gym.vector.VectorEnv,
    policy: MLPPolicy,
    seeds: list[int],
    generator: torch.Generator,
    deterministic: bool = False,
    max_steps: int = 100_000,
    budget: int | None = None,
) -> Trajectories:
    """One whole episode per sub-env, env i reset with seeds[i]; stops when every episode has ended, or at
    `budget` valid steps, where the running episodes end truncated (module docstring)."""
    raw, _ = env.reset(seed=list(seeds))
    space = env.single_observation_space
    finished = np.zeros(env.num_envs, dtype=bool)
    rec = _Recorder(env.num_envs)
    for _ in range(max_steps):
        obs = encode_obs(space, raw)
        act = policy.act(obs, generator, deterministic)
        valid = within(~finished, None if budget is None else budget - rec.steps)
        raw, rew, term, trunc, _ = env.step(_to_env_action(env.single_action_space, act))
        finished |= rec.add(obs, act, rew, term, trunc, valid=valid, next_obs=raw)
        if finished.all():
            break
        if budget is not None and rec.steps >= budget:
            rec.cut(~finished)
            break
    else:
        raise RuntimeError(f"episodes did not end within {max_steps} steps; give the env a TimeLimit")
    return rec.stack({"obs": encode_obs(space, raw)}, close_last=False)


class GymCollector:
    """Collects one update's trajectories from a Gymnasium env in the mode the algorithm asks for.

    `steps`: n_envs envs advance n_steps each, carrying episodes across updates (PPO-style).
    `episodes`: n_starts start seeds, each repeated group_size times (a GRPO group), one whole episode each.
    """

    def __init__(self, env_id: str, env_kwargs: dict, cfg: AlgoConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed_rng = np_stream(seed, "env_starts")
        self.env = make_vec_env(env_id, cfg.streams, env_kwargs, fast=cfg.collect == "steps")
        self.space = self.env.single_observation_space
        if cfg.collect == "steps":
            seeds = self.seed_rng.integers(0, 2**30, size=cfg.streams).tolist()
            per_env = isinstance(self.env.unwrapped, PER_ENV_SEEDED)
            raw, _ = self.env.reset(seed=seeds if per_env else seeds[0])
            self.obs = encode_obs(self.space, raw)
            self.after_done = np.zeros(cfg.streams, dtype=bool)
            self.previous: _Recorder | None = None

    def collect(self, policy: MLPPolicy, generator: torch.Generator, budget: int | None = None) -> Trajectories:
        """One update's batch, cut at `budget` valid steps when given (module docstring)."""
        if self.cfg.collect == "episodes":
            starts = self.seed_rng.integers(0, 2**30, size=self.cfg.n_starts)
            seeds = np.repeat(starts, self.cfg.group_size).tolist()
            return run_episodes(self.env, policy, seeds, generator, budget=budget)
        rec = _Recorder(self.cfg.streams, carry=self.previous, every_obs=True)
        for _ in range(self.cfg.n_steps):
            act = policy.act(self.obs, generator)
            live = ~self.after_done
            valid = within(live, None if budget is None else budget - rec.steps)
            raw, rew, term, trunc, _ = self.env.step(_to_env_action(self.env.single_action_space, act))
            self.after_done = rec.add(self.obs, act, rew, term, trunc, valid=valid, next_obs=raw)
            self.obs = encode_obs(self.space, raw)
            if budget is not None and rec.steps >= budget:
                rec.cut(live & ~valid)
                break
        self.previous = rec
        return rec.stack({"obs": self.obs}, close_last=True)

    def close(self) -> None:
        self.env.close()
