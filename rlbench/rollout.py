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
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlbench.algos.config import AlgoConfig
from rlbench.envs.classic_vector import PER_ENV_SEEDED as BATCHED_CLASSIC
from rlbench.envs.classic_vector import BatchedClassicEnv
from rlbench.policies import MLPPolicy, StackedPolicies, encode_obs
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
    reference_logp: Tensor | None = None
    """log π_ref(a_t|s_t) [N, T] of the run's frozen reference (the initial policy) when collecting computed it
    anyway (TextGen's KL metrics): the trainer uses it instead of its own forward pass. None: the trainer's."""
    reference_s: float = 0.0
    """Wall time of the reference's forward passes while collecting (counted in the update's time/reference_s)."""

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

    def units(self, per_step: dict[str, Tensor], every_slot: bool = False) -> dict[str, Tensor]:
        """Inputs plus `per_step` [N, T] tensors as minibatch units: whole streams, or flat steps that carry
        their episode id as `seq` (for per-sequence loss aggregation) — the valid steps, or with `every_slot`
        all N·T slots, an invalid slot's values zero and its mask 0 (so every batch of this shape gives units
        of one shape)."""
        merged = {**self.inputs, **per_step, "mask": self.mask}
        if self.sequence_units:
            return merged
        valid = self.mask.bool()
        merged["seq"] = self.episode_ids()
        if not every_slot:
            return {key: value[valid] for key, value in merged.items()}
        drop = ~valid.reshape(-1)
        flat = {key: value.reshape(drop.shape[0], *value.shape[2:]) for key, value in merged.items()}
        return {key: value.masked_fill(drop.view(-1, *[1] * (value.dim() - 1)), 0) for key, value in flat.items()}


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
    """A NEXT_STEP-autoreset vector env. The classic-control envs get rlbench's batched implementations (the same
    transitions as Gymnasium's scalar envs, with per-sub-env seeding, so the seeds of a batch share one vector
    env); other envs `fast`: their own vector implementation when they have one, else (and when not `fast`)
    Gymnasium's sync vector env. Tuple and Dict observations come flattened (`is_composite`)."""
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
    """Accumulates per-step arrays of a vector env whose sub-envs are `members` × `streams` (member m owns
    streams m·streams … m·streams + streams − 1) and stacks one member's columns as [N, T] tensors."""

    def __init__(self, members: int, streams: int, carry: _Recorder | None = None, every_obs: bool = False) -> None:
        """`carry`: the previous update's recorder, whose unfinished episodes continue here. `every_obs`: every
        returned observation is used (autoreset continues episodes), not only those after a real transition."""
        self.members, self.streams, self.every_obs = members, streams, every_obs
        total = members * streams
        self.obs, self.act, self.rew, self.term, self.end, self.valid = [], [], [], [], [], []
        self.running_return = np.zeros(total) if carry is None else carry.running_return
        self.running_length = np.zeros(total, dtype=np.int64) if carry is None else carry.running_length
        self.finished: list[tuple[int, float, int]] = []
        """(stream, return, length) of every episode that ended, in the order they ended."""
        self.steps = np.zeros(members, dtype=np.int64)
        """Valid steps recorded so far, per member."""

    def add(
        self, obs: Tensor, act: Tensor, rew, term, trunc, valid: np.ndarray, next_obs: np.ndarray
    ) -> tuple[np.ndarray, dict[int, RunFault]]:
        """Record one vector step. Returns which streams ended an episode, and a RunFault(env_nan) for each member
        given a non-finite reward or next observation (that member's step is not to be used)."""
        rew = np.asarray(rew, dtype=np.float64)
        flat = np.asarray(next_obs, dtype=np.float64).reshape(len(valid), -1)
        used = valid | self.every_obs
        faults: dict[int, RunFault] = {}
        for what, bad in (
            ("reward", ~np.isfinite(rew) & valid),
            ("observation", ~np.isfinite(flat).all(axis=1) & used),
        ):
            for member in np.unique(np.flatnonzero(bad) // self.streams):
                if int(member) in faults:
                    continue
                rows = slice(member * self.streams, (member + 1) * self.streams)
                first = int(np.flatnonzero(bad[rows])[0])
                env_step = int(self.steps[member]) + int(valid[rows][: first + 1].sum())
                faults[int(member)] = RunFault(Status.ENV_NAN, f"non-finite {what} from the environment", env_step)
        rew = np.where(valid, rew, 0.0)
        done = (np.asarray(term) | np.asarray(trunc)) & valid
        self.obs.append(obs)
        self.act.append(act)
        self.rew.append(rew)
        self.term.append(np.asarray(term) & valid)
        self.end.append(done | ~valid)
        self.valid.append(valid)
        self.steps += valid.reshape(self.members, self.streams).sum(axis=1)
        self.running_return += rew
        self.running_length += valid
        for i in np.flatnonzero(done):
            self.finished.append((int(i), float(self.running_return[i]), int(self.running_length[i])))
            self.running_return[i] = 0.0
            self.running_length[i] = 0
        return done, faults

    def cut(self, streams: np.ndarray) -> None:
        """End the running episodes of `streams` ([members × streams] bool) at their last recorded valid step,
        as truncated."""
        for i in np.flatnonzero(streams):
            for valid, end in zip(reversed(self.valid), reversed(self.end)):
                if valid[i]:
                    end[i] = True
                    break

    def stack(self, member: int, columns: int, last_inputs: dict[str, Tensor] | None, close_last: bool) -> Trajectories:
        """Member `member`'s first `columns` steps as [streams, columns] trajectories."""
        rows = slice(member * self.streams, (member + 1) * self.streams)

        def t(items, dtype=torch.float32):
            return torch.as_tensor(np.stack([x[rows] for x in items[:columns]], axis=1), dtype=dtype)

        ends = t(self.end)
        if close_last:
            ends[:, -1] = 1.0
        episodes = [(ret, length) for i, ret, length in self.finished if rows.start <= i < rows.stop]
        return Trajectories(
            inputs={
                "obs": torch.stack([x[rows] for x in self.obs[:columns]], dim=1),
                "act": torch.stack([x[rows] for x in self.act[:columns]], dim=1),
            },
            rewards=t(self.rew),
            terminated=t(self.term),
            ends=ends,
            mask=t(self.valid),
            last_inputs=last_inputs,
            episode_returns=[ret for ret, _ in episodes],
            episode_lengths=[length for _, length in episodes],
        )


def within(valid: np.ndarray, room: np.ndarray | None) -> np.ndarray:
    """`valid` [members, streams] bool keeping only each member's first room[m] True entries, flattened
    (all of them when room is None)."""
    if room is None:
        return valid.reshape(-1)
    return (valid & (np.cumsum(valid, axis=1) <= room[:, None])).reshape(-1)


class MemberEnvs:
    """The vector env(s) of a batch of members (seeds), each owning `streams` sub-envs: one vector env of
    members × streams sub-envs when the env seeds its sub-envs one by one (rlbench's batched classic control,
    Gymnasium's sync vector env), else one vector env per member (an env's own vector implementation may draw
    every sub-env's start from one generator, as Gymnasium's CartPole's does, so members cannot share it)."""

    def __init__(self, envs: list[gym.vector.VectorEnv], streams: int) -> None:
        self.envs, self.streams = envs, streams
        self.members = len(envs) if len(envs) > 1 else envs[0].num_envs // streams
        self.single_observation_space = envs[0].single_observation_space
        self.single_action_space = envs[0].single_action_space

    @classmethod
    def make(cls, env_id: str, env_kwargs: dict, streams: int, members: int, fast: bool) -> MemberEnvs:
        env = make_vec_env(env_id, streams * members, env_kwargs, fast)
        if members == 1 or isinstance(env.unwrapped, PER_ENV_SEEDED):
            return cls([env], streams)
        env.close()
        return cls([make_vec_env(env_id, streams, env_kwargs, fast) for _ in range(members)], streams)

    def reset(self, seeds: list[list[int] | None]) -> np.ndarray:
        """Reset every sub-env, those of member m with seeds[m] (None: its generators keep running)."""
        if len(self.envs) == 1:
            flat = [s for member in seeds for s in (member or [None] * self.streams)]
            per_env = isinstance(self.envs[0].unwrapped, PER_ENV_SEEDED)
            return self.envs[0].reset(seed=flat if per_env else flat[0])[0]
        return np.concatenate([env.reset(seed=member[0])[0] for env, member in zip(self.envs, seeds)])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every sub-env; observations, rewards, terminations, truncations of all, member by member."""
        if len(self.envs) == 1:
            return self.envs[0].step(actions)[:4]
        parts = [env.step(actions[m * self.streams : (m + 1) * self.streams])[:4] for m, env in enumerate(self.envs)]
        return tuple(np.concatenate([part[k] for part in parts]) for k in range(4))

    def close(self) -> None:
        for env in self.envs:
            env.close()


Actor = Callable[[Tensor, tuple[int, ...]], Tensor]
"""act(obs [len(members), streams, d], members) → actions [len(members), streams, ...]."""


def _all_rows(actions: Tensor, members: tuple[int, ...], count: int) -> Tensor:
    """Actions [len(members), streams, ...] placed in the rows of all `count` members' sub-envs, member by member;
    zeros (a placeholder action) in the rows of members no longer collecting, whose steps are never recorded."""
    full = torch.zeros((count, *actions.shape[1:]), dtype=actions.dtype)
    full[list(members)] = actions
    return full.reshape(-1, *actions.shape[2:])


def run_episodes(
    envs: MemberEnvs,
    act: Actor,
    seeds: list[list[int] | None],
    budgets: np.ndarray | None = None,
    max_steps: int = 100_000,
) -> dict[int, Trajectories | RunFault]:
    """One whole episode per sub-env of each member m with seeds[m] (None: the member does not collect), sub-env
    i reset with seeds[m][i]. A member stops when every one of its episodes has ended, or at budgets[m] valid
    steps, where its running episodes end truncated (module docstring); a member given a non-finite value by its
    env stops with that RunFault."""
    raw = envs.reset(seeds)
    space, streams = envs.single_observation_space, envs.streams
    active = [m for m, member_seeds in enumerate(seeds) if member_seeds is not None]
    finished = np.zeros((envs.members, streams), dtype=bool)
    rec = _Recorder(envs.members, streams)
    out: dict[int, Trajectories | RunFault] = {}
    for column in range(1, max_steps + 1):
        if not active:
            return out
        members = tuple(active)
        obs = encode_obs(space, raw)
        actions = act(obs.reshape(envs.members, streams, -1)[list(members)], members)
        room = None if budgets is None else budgets - rec.steps
        valid = within(~finished, room) & np.repeat(np.isin(np.arange(envs.members), members), streams)
        full = _all_rows(actions, members, envs.members)
        raw, rew, term, trunc = envs.step(_to_env_action(envs.single_action_space, full))
        done, faults = rec.add(obs, full, rew, term, trunc, valid=valid, next_obs=raw)
        finished |= done.reshape(envs.members, streams)
        next_obs = encode_obs(space, raw)
        for m in members:
            if m in faults:
                out[m] = faults[m]
            elif finished[m].all() or (budgets is not None and rec.steps[m] >= budgets[m]):
                if not finished[m].all():
                    rec.cut(np.repeat(np.arange(envs.members) == m, streams) & ~finished.reshape(-1))
                rows = slice(m * streams, (m + 1) * streams)
                out[m] = rec.stack(m, column, {"obs": next_obs[rows]}, close_last=False)
            else:
                continue
            active.remove(m)
    raise RuntimeError(f"episodes did not end within {max_steps} steps; give the env a TimeLimit")


class GymCollector:
    """Collects one update's trajectories for each seed of a batch (its members) from Gymnasium envs, in the mode
    the algorithm asks for; every random draw of a member comes from that member's own streams, so a member's
    trajectories do not depend on the others (tests/test_seed_batch.py).

    `steps`: n_envs envs per member advance n_steps each, carrying episodes across updates (PPO-style).
    `episodes`: n_starts start seeds, each repeated group_size times (a GRPO group), one whole episode each.
    """

    def __init__(self, env_id: str, env_kwargs: dict, cfg: AlgoConfig, seeds: list[int]) -> None:
        self.cfg = cfg
        self.seed_rngs = [np_stream(seed, "env_starts") for seed in seeds]
        self.envs = MemberEnvs.make(env_id, env_kwargs, cfg.streams, len(seeds), fast=cfg.collect == "steps")
        self.space = self.envs.single_observation_space
        if cfg.collect == "steps":
            starts = [rng.integers(0, 2**30, size=cfg.streams).tolist() for rng in self.seed_rngs]
            self.obs = encode_obs(self.space, self.envs.reset(starts))
            self.after_done = np.zeros(len(seeds) * cfg.streams, dtype=bool)
            self.previous: _Recorder | None = None

    def collect(self, policy: MLPPolicy, generator: torch.Generator, budget: int | None = None) -> Trajectories:
        """One update's batch of a one-seed collector, cut at `budget` valid steps when given (module docstring);
        raises the RunFault of a non-finite env value."""
        if self.envs.members != 1:
            raise ValueError(f"collect() serves a one-seed collector; this one has {self.envs.members} (collect_batch)")
        budgets = None if budget is None else {0: budget}
        out = self.collect_batch([policy], {0: generator}, budgets)[0]
        if isinstance(out, RunFault):
            raise out
        return out

    def collect_batch(
        self,
        policies: list[MLPPolicy],
        generators: dict[int, torch.Generator],
        budgets: dict[int, int] | None = None,
    ) -> dict[int, Trajectories | RunFault]:
        """One update's batch for each member in `generators` (the members still training), each cut at its
        budget when given; members[m]'s actions come from policies[m] and generators[m]."""
        stacked = StackedPolicies(policies)
        members = sorted(generators)
        room = None if budgets is None else np.array([budgets.get(m, 0) for m in range(self.envs.members)])

        def act(obs: Tensor, rows: tuple[int, ...]) -> Tensor:
            return stacked.act(obs, rows, [generators[m] for m in rows])

        if self.cfg.collect == "episodes":
            seeds: list[list[int] | None] = [None] * self.envs.members
            for m in members:
                starts = self.seed_rngs[m].integers(0, 2**30, size=self.cfg.n_starts)
                seeds[m] = np.repeat(starts, self.cfg.group_size).tolist()
            return run_episodes(self.envs, act, seeds, room)
        return self._advance(act, members, room)

    def _advance(self, act: Actor, members: list[int], room: np.ndarray | None) -> dict[int, Trajectories | RunFault]:
        """n_steps of every member's envs (steps mode), each member stopping early at its budget."""
        streams, total = self.cfg.streams, self.envs.members * self.cfg.streams
        rec = _Recorder(self.envs.members, streams, carry=self.previous, every_obs=True)
        collecting = np.repeat(np.isin(np.arange(self.envs.members), members), streams)
        out: dict[int, Trajectories | RunFault] = {}
        active = list(members)
        for column in range(1, self.cfg.n_steps + 1):
            rows = tuple(active)
            actions = act(self.obs.reshape(self.envs.members, streams, -1)[list(rows)], rows)
            live = ~self.after_done & collecting
            valid = within(live.reshape(self.envs.members, streams), None if room is None else room - rec.steps)
            full = _all_rows(actions, rows, self.envs.members)
            raw, rew, term, trunc = self.envs.step(_to_env_action(self.envs.single_action_space, full))
            self.after_done, faults = rec.add(self.obs, full, rew, term, trunc, valid=valid, next_obs=raw)
            self.obs = encode_obs(self.space, raw)
            for m in rows:
                own = slice(m * streams, (m + 1) * streams)
                if m in faults:
                    out[m] = faults[m]
                elif room is not None and rec.steps[m] >= room[m]:
                    cut = np.zeros(total, dtype=bool)
                    cut[own] = (live & ~valid)[own]
                    rec.cut(cut)
                    out[m] = rec.stack(m, column, {"obs": self.obs[own]}, close_last=True)
                elif column == self.cfg.n_steps:
                    out[m] = rec.stack(m, column, {"obs": self.obs[own]}, close_last=True)
                else:
                    continue
                active.remove(m)
                collecting[own] = False
            if not active:
                break
        self.previous = rec
        return out

    def close(self) -> None:
        self.envs.close()
