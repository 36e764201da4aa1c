"""Env steps/s of the batched classic-control envs against Gymnasium's `SyncVectorEnv`, measured side by side."""

from __future__ import annotations

import dataclasses
import time

import gymnasium as gym
import numpy as np

from rlbench.envs.classic_vector import VECTOR_ENTRY_POINTS


def steps_per_second(env: gym.vector.VectorEnv, steps: int, seed: int = 0) -> float:
    """Sub-env steps per second of `steps` vector steps with pre-drawn random actions (sampling not timed)."""
    rng = np.random.default_rng(seed)
    space = env.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        actions = rng.integers(0, space.n, size=(steps, env.num_envs))
    else:
        actions = rng.uniform(space.low, space.high, size=(steps, env.num_envs, *space.shape)).astype(space.dtype)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    return steps * env.num_envs / (time.perf_counter() - start)


def compare(
    env_id: str, num_envs: tuple[int, ...] = (8, 64), seconds: float = 1.0, repeats: int = 3
) -> list[dict[str, float]]:
    """Batched vs sync steps/s per `num_envs`, interleaved `repeats` times (best of each kept).

    Each measurement runs for about `seconds`. Returns one row per num_envs with both rates and their ratio.
    Gymnasium's registry is not changed (the batched env is made from a copy of the spec).
    """
    spec = dataclasses.replace(gym.spec(env_id), vector_entry_point=VECTOR_ENTRY_POINTS[env_id])
    rows = []
    for n in num_envs:
        envs = {mode: gym.make_vec(spec, n, vectorization_mode=mode) for mode in ("vector_entry_point", "sync")}
        steps = {mode: max(10, int(seconds * steps_per_second(env, 20) / n)) for mode, env in envs.items()}
        best = dict.fromkeys(envs, 0.0)
        for _ in range(repeats):
            for mode, env in envs.items():
                best[mode] = max(best[mode], steps_per_second(env, steps[mode]))
        rows.append(
            {
                "num_envs": n,
                "batched_steps_per_s": best["vector_entry_point"],
                "sync_steps_per_s": best["sync"],
                "ratio": best["vector_entry_point"] / best["sync"],
            }
        )
    return rows
