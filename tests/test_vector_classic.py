"""Batched Acrobot, MountainCar, Pendulum and CartPole equal Gymnasium's scalar envs step for step (issue 12,
acceptance 4).

The reference is Gymnasium's own `SyncVectorEnv` over `gym.make(id)` (scalar env + TimeLimit, NEXT_STEP
autoreset), fed the same actions; every observation, reward, termination and truncation must be identical,
dtypes included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gymnasium as gym
import numpy as np
import pytest

from rlbench.envs.classic_vector import (
    VECTOR_ENTRY_POINTS,
    AcrobotVectorEnv,
    MountainCarVectorEnv,
    PendulumVectorEnv,
    SeededCartPoleVectorEnv,
    register_vector_entry_points,
)

NUM_ENVS = 32
PHASE_STEPS = 1000
"""Three phases of 1,000 steps: reset(seed=int), reset() continuing each generator, reset(seed=list, options)."""


def pump_or_random(env_id: str, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Actions for every sub-env: an energy-pumping action with probability i/(n-1) for sub-env i, else random.

    Pumping (push along the velocity; on Acrobot the sum of both joints') reaches the goals, walls and speed
    limits that random actions rarely do; Pendulum's random torques exceed ±2 so the clip is exercised. On
    CartPole the deliberate action balances the pole (push towards where it falls), reaching the time limit.
    """
    n = len(obs)
    pump = rng.random(n) < np.linspace(0.0, 1.0, n)
    if env_id == "CartPole-v1":
        return np.where(pump, (obs[:, 2] + obs[:, 3] > 0).astype(np.int64), rng.integers(0, 2, n))
    if env_id == "Pendulum-v1":
        push = np.where(obs[:, 2] > 0, 2.0, -2.0)
        return np.where(pump, push, rng.uniform(-2.5, 2.5, n)).astype(np.float32)[:, None]
    velocity = obs[:, 4] + obs[:, 5] if env_id == "Acrobot-v1" else obs[:, 1]
    return np.where(pump, np.where(velocity > 0, 2, 0), rng.integers(0, 3, n))


def run_lockstep(
    env_id: str,
    batched: gym.vector.VectorEnv,
    reference: gym.vector.VectorEnv,
    resets: list[dict],
    steps: int,
) -> dict[str, np.ndarray]:
    """Drive both envs with the same actions; assert equality at every reset and step; return the stacked run."""
    rng = np.random.default_rng(12)
    record: dict[str, list[np.ndarray]] = {"obs": [], "terminated": [], "truncated": []}
    for reset_kwargs in resets:
        obs, info = batched.reset(**reset_kwargs)
        ref_obs, ref_info = reference.reset(**reset_kwargs)
        np.testing.assert_array_equal(obs, ref_obs)
        assert obs.dtype == ref_obs.dtype and info == ref_info
        for t in range(steps):
            actions = pump_or_random(env_id, obs, rng)
            out, ref = batched.step(actions), reference.step(actions)
            for name, got, want in zip(("obs", "reward", "terminated", "truncated"), out[:4], ref[:4]):
                assert got.dtype == want.dtype, (name, t)
                if not np.array_equal(got, want):  # the slow assert only to report a difference
                    np.testing.assert_array_equal(got, want, err_msg=f"{env_id} {name} differs at step {t}")
            obs = out[0]
            for name, value in zip(("obs", "terminated", "truncated"), (out[0], out[2], out[3])):
                record[name].append(value)
    return {name: np.stack(rows) for name, rows in record.items()}


OPTIONS = {
    "Acrobot-v1": {"low": -0.2, "high": 0.2},
    "MountainCar-v0": {"low": -1.0, "high": -0.2},
    "Pendulum-v1": {"x_init": 1.0, "y_init": 4.0},
    "CartPole-v1": {"low": -0.2, "high": 0.2},
}
CLASSES = {
    "Acrobot-v1": AcrobotVectorEnv,
    "MountainCar-v0": MountainCarVectorEnv,
    "Pendulum-v1": PendulumVectorEnv,
    "CartPole-v1": SeededCartPoleVectorEnv,
}
REGISTERED = {env_id: cls for env_id, cls in CLASSES.items() if env_id in VECTOR_ENTRY_POINTS}
"""The classes register_vector_entry_points installs (CartPole keeps Gymnasium's own vector entry point)."""


def coverage(env_id: str, run: dict[str, np.ndarray]) -> dict[str, int]:
    """How often the run reached each branch of the dynamics worth testing (counts over all sub-env steps)."""
    obs = run["obs"]
    counts = {"terminated": int(run["terminated"].sum()), "truncated": int(run["truncated"].sum())}
    if env_id == "Acrobot-v1":
        limits = np.float32([4 * np.pi, 9 * np.pi])
        counts["speed limit"] = int((np.abs(obs[..., 4:]) == limits).any(axis=-1).sum())
    elif env_id == "CartPole-v1":
        counts["pole fell"] = int((np.abs(obs[..., 2]) > np.float32(12 * 2 * np.pi / 360)).sum())
    elif env_id == "MountainCar-v0":
        counts["left wall"] = int(((obs[..., 0] == np.float32(-1.2)) & (obs[..., 1] == 0)).sum())
    else:
        counts["speed limit"] = int((np.abs(obs[..., 2]) == 8).sum())
    return counts


@pytest.mark.parametrize("env_id", list(CLASSES))
def test_batched_env_equals_gymnasium_scalar_envs(env_id: str) -> None:
    """32 sub-envs × 3 × 1,000 steps through resets, terminations and truncations: identical to the scalar envs."""
    batched = CLASSES[env_id](num_envs=NUM_ENVS, max_episode_steps=gym.spec(env_id).max_episode_steps)
    reference = gym.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode="sync")
    seeds = [1000 + 7 * i for i in range(NUM_ENVS)]
    resets = [{"seed": 5}, {}, {"seed": seeds, "options": OPTIONS[env_id]}]
    run = run_lockstep(env_id, batched, reference, resets, PHASE_STEPS)
    counts = coverage(env_id, run)
    needed = [name for name in counts if name != "terminated" or env_id != "Pendulum-v1"]
    assert all(counts[name] > 0 for name in needed), counts


@pytest.mark.parametrize("env_id", list(CLASSES))
def test_sub_env_i_starts_like_a_scalar_env_reset_with_seed_plus_i(env_id: str) -> None:
    """2,000 seeds: enough resets to catch Acrobot's float32 reset observation (~0.2% of cos/sin values differ
    from the float64-then-cast path)."""
    batched_obs, _ = CLASSES[env_id](num_envs=2000).reset(seed=40)
    scalar = gym.make(env_id)
    scalar_obs = np.array([scalar.reset(seed=40 + i)[0] for i in range(2000)])
    np.testing.assert_array_equal(batched_obs, scalar_obs)


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("MountainCar-v0", {"goal_velocity": 0.02}),
        ("Pendulum-v1", {"g": 9.81}),
        ("CartPole-v1", {"sutton_barto_reward": True}),
    ],
)
def test_constructor_arguments_match_the_scalar_envs(env_id: str, kwargs: dict) -> None:
    batched = CLASSES[env_id](num_envs=8, **kwargs)
    reference = gym.make_vec(env_id, num_envs=8, vectorization_mode="sync", **kwargs)
    run_lockstep(env_id, batched, reference, [{"seed": 3}], 400)


def test_acrobot_nips_dynamics_match() -> None:
    batched = AcrobotVectorEnv(num_envs=8, book_or_nips="nips")
    reference = gym.make_vec("Acrobot-v1", num_envs=8, vectorization_mode="sync")
    for env in reference.envs:
        env.unwrapped.book_or_nips = "nips"
    run_lockstep("Acrobot-v1", batched, reference, [{"seed": 3}], 400)


@pytest.fixture
def vector_entry_points() -> Iterator[Callable[[], list[str]]]:
    """Registers the entry points for one test and puts Gymnasium's original specs back afterwards."""
    saved = {env_id: gym.registry[env_id] for env_id in VECTOR_ENTRY_POINTS}
    yield register_vector_entry_points
    gym.registry.update(saved)


def test_make_vec_builds_the_batched_classes(vector_entry_points: Callable[[], list[str]]) -> None:
    import rlbench.envs  # noqa: F401  importing rlbench's envs must not register them (the collector would switch)

    assert all(gym.spec(env_id).vector_entry_point is None for env_id in VECTOR_ENTRY_POINTS)
    assert vector_entry_points() == list(VECTOR_ENTRY_POINTS)
    assert vector_entry_points() == []
    for env_id, cls in REGISTERED.items():
        env = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point")
        assert type(env) is cls and env.num_envs == 4
        assert env.max_episode_steps == gym.spec(env_id).max_episode_steps
        assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
        assert type(gym.make_vec(env_id, num_envs=2)) is cls
        assert gym.spec(env_id).entry_point.startswith("gymnasium.envs.classic_control.")
        assert not isinstance(gym.make(env_id).unwrapped, gym.vector.VectorEnv)
    assert gym.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="vector_entry_point", g=9.81).g == 9.81


def test_step_before_reset_and_bad_actions_are_errors() -> None:
    env = MountainCarVectorEnv(num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0, 1]))
    env.reset(seed=0)
    for bad in (np.array([0, 3]), np.array([1]), np.array([0.0, 1.0])):
        with pytest.raises(ValueError, match="integer actions"):
            env.step(bad)
    with pytest.raises(ValueError, match="seeds"):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.array([True, False])})


@pytest.mark.parametrize("env_id", sorted(VECTOR_ENTRY_POINTS))
def test_the_collector_uses_the_batched_envs_with_per_env_seeds(env_id: str) -> None:
    from rlbench.rollout import PER_ENV_SEEDED, make_vec_env

    for fast in (False, True):
        env = make_vec_env(env_id, 3, {}, fast=fast)
        assert type(env).__name__ == VECTOR_ENTRY_POINTS[env_id].rsplit(":", 1)[1]
        assert isinstance(env, PER_ENV_SEEDED)
        env.close()
    assert gym.registry[env_id].vector_entry_point is None, "the collector must not change Gymnasium's registry"
