"""rlbench's environment contract, checked before any run starts and by `rlbench check-env`."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from rlbench import registry
from rlbench.policies import MLPPolicy
from rlbench.rollout import is_composite

ROLLOUT_STEPS = 300
"""Random-policy steps used to check finiteness, space membership and episode ends."""
MAX_EPISODE = 10_000
"""Episodes must end within the env's TimeLimit, or this many steps when it has none."""


@dataclass
class Check:
    """One verdict: `ok` False is a problem that stops a run; `detail` explains it (for a passing Gymnasium check,
    its advisory warnings)."""

    name: str
    ok: bool
    detail: str = ""


def _gymnasium_checker(env: gym.Env) -> Check:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_env(env.unwrapped, skip_render_check=True)
        except Exception as err:  # the checker raises AssertionError, TypeError, …: every one is a verdict
            return Check("gymnasium check_env", False, f"{type(err).__name__}: {err}")
    notes = sorted({re.sub(r"\x1b\[[0-9;]*m", "", str(w.message)) for w in caught})
    return Check("gymnasium check_env", True, "; ".join(notes))


def _spaces(env: gym.Env, env_id: str) -> Check:
    builder = registry.task_builder(env_id)
    if builder is not None:
        return Check("supported spaces", True, f"its own task builder {builder} handles them")
    try:
        MLPPolicy(env.observation_space, env.action_space, hidden=1)
    except ValueError as err:
        return Check("supported spaces", False, str(err))
    return Check("supported spaces", True, f"observation {env.observation_space}, action {env.action_space}")


def _seeded_reset(env: gym.Env) -> Check:
    first, _ = env.reset(seed=1234)
    again, _ = env.reset(seed=1234)
    if not np.array_equal(np.asarray(first), np.asarray(again)):
        return Check(
            "seeded reset reproducible",
            False,
            "reset(seed=1234) twice gave different observations; GRPO groups need the same start state",
        )
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(5)]
    trace = []
    for _ in range(2):
        env.reset(seed=1234)
        trace.append([env.step(a)[:2] for a in actions])
    same = all(np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and a[1] == b[1] for a, b in zip(*trace))
    detail = "" if same else "the same seed and actions gave different steps"
    return Check("seeded reset reproducible", same, detail)


def _rollout(env: gym.Env, max_episode: int) -> list[Check]:
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    problems: dict[str, str] = {}
    length, ended = 0, False
    for step in range(1, max(ROLLOUT_STEPS, max_episode + 1) + 1):
        if not env.observation_space.contains(obs):
            problems.setdefault(
                "observations in space",
                f"step {step - 1}: {obs!r} is not in {env.observation_space}"
                f" (dtype {getattr(obs, 'dtype', type(obs).__name__)})",
            )
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        length += 1
        if not math.isfinite(float(reward)):
            problems.setdefault("finite rewards", f"reward {reward} at step {step}")
        if not np.all(np.isfinite(np.asarray(obs, dtype=np.float64))):
            problems.setdefault("finite observations", f"non-finite observation at step {step}")
        if terminated or truncated:
            ended = True
            if step >= ROLLOUT_STEPS:
                break
            obs, _ = env.reset()
            length = 0
        elif length > max_episode:
            break
    checks = [
        Check(name, name not in problems, problems.get(name, ""))
        for name in ("observations in space", "finite rewards", "finite observations")
    ]
    checks.append(
        Check(
            "episode ends within the step limit",
            ended,
            "" if ended else f"no episode ended within {max_episode} random steps",
        )
    )
    return checks


def check_contract(env_id: str, env_kwargs: dict[str, Any] | None = None, seeded_reset: bool = True) -> list[Check]:
    """Every check rlbench needs before training on env_id; `seeded_reset` is required by GRPO groups."""
    env = make_for_check(env_id, env_kwargs)
    return env if isinstance(env, list) else check_made(env, env_id, seeded_reset)


def make_for_check(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gym.Env | list[Check]:
    """The env to check, or the failed `make` check."""
    try:
        return gym.make(env_id, disable_env_checker=True, **(env_kwargs or {}))
    except Exception as err:
        return [Check("make", False, f"gym.make({env_id!r}) failed: {type(err).__name__}: {err}")]


def check_made(env: gym.Env, env_id: str, seeded_reset: bool = True) -> list[Check]:
    """check_contract's checks on an env already constructed (closed afterwards)."""
    limit = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else MAX_EPISODE
    checks = [_gymnasium_checker(env)]
    if is_composite(env.observation_space) and registry.task_builder(env_id) is None:
        original = env.observation_space
        env = gym.wrappers.FlattenObservation(env)
        checks.append(
            Check("observations flattened", True, f"{original} → {env.observation_space} (FlattenObservation)")
        )
    spaces = _spaces(env, env_id)
    checks.append(spaces)
    for check in [_seeded_reset] if seeded_reset else []:
        try:
            checks.append(check(env))
        except Exception as err:
            checks.append(Check("seeded reset reproducible", False, f"{type(err).__name__}: {err}"))
    if spaces.ok:
        try:
            checks += _rollout(env, limit)
        except Exception as err:
            checks.append(Check("random rollout", False, f"{type(err).__name__}: {err}"))
    env.close()
    return checks
