"""Batched Acrobot-v1, MountainCar-v0, Pendulum-v1 and CartPole-v1: Gymnasium vector envs vectorised over sub-envs
with NumPy, every sub-env seeded on its own.

Each class mirrors Gymnasium's scalar env of the same id step for step: for identical seeds and actions its
observations, rewards, terminations and truncations equal those of `gym.make_vec(id, n, vectorization_mode="sync")`
bitwise (tests/test_vector_classic.py). Gymnasium 1.x ships a vector entry point only for CartPole; these fill
the gap for the other discrete-time classic-control envs. Gymnasium's CartPole vector env draws every sub-env's
start from one generator, so its sub-envs cannot stand for separate scalar envs (nor the envs of several seeds
in one batch); `SeededCartPoleVectorEnv` can.

Contract shared by all four (the same as Gymnasium's `SyncVectorEnv` over the scalar envs):

- **Seeding**: every sub-env has its own `np.random.Generator`, made like a scalar env's
  (`gymnasium.utils.seeding.np_random`). `reset(seed=s)` with an int seeds sub-env i with `s + i`; a list seeds
  sub-env i with `seed[i]`; None (or a None entry) keeps that sub-env's generator running (a fresh one from OS
  entropy if it never had one). So sub-env i is exactly a scalar env reset with the same seed.
- **Autoreset**: `AutoresetMode.NEXT_STEP` only (Gymnasium's default). The step after a sub-env terminates or
  truncates ignores its action, resets it with its own generator and default bounds (reset `options` apply
  to the explicit `reset` only, as `SyncVectorEnv` calls the sub-env's `reset()` without options) and returns
  its first observation with reward 0 and terminated = truncated = False.
- **Time limit**: `truncated` is True once a sub-env has taken `max_episode_steps` steps since its reset (the
  `TimeLimit` wrapper's rule; a sub-env can be terminated and truncated on the same step).
- **Dtypes**: observations float32 `(num_envs, obs_dim)`, rewards float64, terminations and truncations bool,
  infos `{}`. Pendulum computes with the dtype of the actions it is given, as the scalar env does (float32 from
  `action_space.sample()` or rlbench's collector).
- **Exactness**: the arithmetic follows the scalar envs operation for operation, including their float32 casts
  and NumPy-scalar `x**2` (libm `pow`, which differs from `x*x` in ~1e-3 of cases; see `_pow2`). This relies on
  NumPy's array `sin`/`cos` giving the same bits as the scalar calls Gymnasium makes (true where NumPy uses the
  platform libm, e.g. this x86-64 AVX2 machine; the equality test checks it on each platform).
- No rendering (`render_mode` must be None) and no Acrobot torque noise (0 in Acrobot-v1).

Registration: `register_vector_entry_points()` adds these classes as the vector entry points of Gymnasium's
own ids (the scalar entry points are untouched). It is not called on import: rlbench's collector picks a vector
entry point whenever an id has one, so registering on import would change run results.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import utils
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

VECTOR_ENTRY_POINTS: dict[str, str] = {
    "Acrobot-v1": "rlbench.envs.classic_vector:AcrobotVectorEnv",
    "MountainCar-v0": "rlbench.envs.classic_vector:MountainCarVectorEnv",
    "Pendulum-v1": "rlbench.envs.classic_vector:PendulumVectorEnv",
}
"""Gymnasium id → the vector entry point `register_vector_entry_points` gives it."""

PER_ENV_SEEDED: dict[str, str] = {
    **VECTOR_ENTRY_POINTS,
    "CartPole-v1": "rlbench.envs.classic_vector:SeededCartPoleVectorEnv",
    "CartPole-v0": "rlbench.envs.classic_vector:SeededCartPoleVectorEnv",
}
"""Gymnasium id → this module's batched class for it (CartPole keeps Gymnasium's own vector entry point)."""


def register_vector_entry_points() -> list[str]:
    """Give Gymnasium's Acrobot-v1, MountainCar-v0 and Pendulum-v1 specs these vector entry points.

    Each spec is replaced by a copy that differs only in `vector_entry_point`, so `gym.make` is unchanged and
    `gym.make_vec(id, n)` (default or `vectorization_mode="vector_entry_point"`) builds the batched class. Ids
    that already have a vector entry point are left alone. Idempotent; returns the ids it changed.
    """
    changed = []
    for env_id, entry_point in VECTOR_ENTRY_POINTS.items():
        spec = gym.registry[env_id]
        if spec.vector_entry_point is None:
            gym.registry[env_id] = dataclasses.replace(spec, vector_entry_point=entry_point)
            changed.append(env_id)
    return changed


def _pow2(x: np.ndarray) -> np.ndarray:
    """`x**2` as NumPy computes it for one scalar (libm `pow`, not the correctly rounded `x*x`).

    An array exponent keeps NumPy off its square fast path, which a scalar exponent 2 (even broadcast) takes.
    """
    return np.power(x, _twos(x.shape, x.dtype))


@functools.cache
def _twos(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only array of 2s (cached: allocating it per call cost more than the power itself)."""
    twos = np.full(shape, 2, dtype=dtype)
    twos.flags.writeable = False
    return twos


def _rows_to_obs(rows: list[np.ndarray]) -> np.ndarray:
    """Observation components, each of shape (n,), as a C-ordered float32 batch (n, obs_dim).

    `np.array` of the rows, not `np.stack`: on these tiny arrays np.stack's Python overhead (~5 µs) was the
    largest single cost of a step.
    """
    return np.array(rows).T.astype(np.float32, order="C")


def _per_env_seeds(seed: int | list[int | None] | None, num_envs: int) -> list[int | None]:
    """`SyncVectorEnv`'s seed rule: None → no new seeds, int s → s, s+1, …, list → one per sub-env."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"expected {num_envs} seeds, got {len(seeds)}")
    return seeds


class BatchedClassicEnv(VectorEnv):
    """Per-sub-env seeding, NEXT_STEP autoreset and the time limit; subclasses supply the dynamics.

    State is kept component-major, shape (state_dim, num_envs), float64.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        max_episode_steps: int,
        single_observation_space: spaces.Box,
        single_action_space: spaces.Space,
        render_mode: str | None,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"{type(self).__name__} does not render; use vectorization_mode='sync' to render")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = None
        self.single_observation_space = single_observation_space
        self.observation_space = batch_space(single_observation_space, num_envs)
        self.single_action_space = single_action_space
        self.action_space = batch_space(single_action_space, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._state: np.ndarray | None = None
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=np.bool_)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env (seeds as in the module docstring; `options` as the scalar env's reset).

        `SyncVectorEnv`'s partial reset (`options["reset_mask"]`) is not supported and raises ValueError.
        """
        if options is not None and "reset_mask" in options:
            raise ValueError(f"{type(self).__name__} resets all sub-envs; options['reset_mask'] is not supported")
        for i, env_seed in enumerate(_per_env_seeds(seed, self.num_envs)):
            if env_seed is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(env_seed)
        self._state = np.stack([self._initial_state(rng, options) for rng in self._rngs], axis=1)
        self._steps[:] = 0
        self._autoreset[:] = False
        return self._initial_obs(self._state), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every sub-env one step; sub-envs that ended on the previous step reset instead (NEXT_STEP)."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        state, reward, terminated = self._advance(self._state, actions)
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        obs = self._observe(state)
        restart = np.flatnonzero(self._autoreset)
        if restart.size:
            fresh = np.stack([self._initial_state(self._rngs[i], None) for i in restart], axis=1)
            state[:, restart] = fresh
            obs[restart] = self._initial_obs(fresh)
            reward[restart] = 0.0
            terminated[restart] = False
            truncated[restart] = False
            self._steps[restart] = 0
        self._state = state
        self._autoreset = terminated | truncated
        return obs, reward, terminated, truncated, {}

    def _initial_state(self, rng: np.random.Generator, options: dict[str, Any] | None) -> np.ndarray:
        """One sub-env's start state, shape (state_dim,), drawn from `rng` exactly as the scalar env's reset."""
        raise NotImplementedError

    def _advance(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dynamics of every sub-env: (next state (state_dim, n), reward (n,) float64, terminated (n,) bool)."""
        raise NotImplementedError

    def _observe(self, state: np.ndarray) -> np.ndarray:
        """Observations (n, obs_dim) float32 of stepped states (state_dim, n)."""
        raise NotImplementedError

    def _initial_obs(self, state: np.ndarray) -> np.ndarray:
        """Observations of freshly reset states; the same as `_observe` unless the scalar reset differs."""
        return self._observe(state)

    def _discrete_actions(self, actions: np.ndarray) -> np.ndarray:
        """`actions` as an int64 array of shape (num_envs,), each in the Discrete single action space."""
        acts = np.asarray(actions)
        n = self.single_action_space.n
        if acts.shape != (self.num_envs,) or acts.dtype.kind not in "iu" or acts.min() < 0 or acts.max() >= n:
            raise ValueError(f"expected {self.num_envs} integer actions in [0, {n}), got {actions!r}")
        return acts.astype(np.int64, copy=False)


class AcrobotVectorEnv(BatchedClassicEnv):
    """Acrobot-v1 for `num_envs` sub-envs at once; mirrors `gymnasium.envs.classic_control.acrobot.AcrobotEnv`.

    Two links hang from a fixed pivot; torque on the joint between them must swing the free end above a line.
    Dynamics: Sutton & Barto's book equations (or the NIPS paper's with `book_or_nips="nips"`), integrated
    with one fourth-order Runge-Kutta step of `dt` = 0.2 s; angles wrapped to [-π, π], joint velocities
    clipped to ±4π and ±9π.

    ## Action Space
    `Discrete(3)` per sub-env: torque -1, 0 or +1 on the actuated joint (batched: `MultiDiscrete`).

    ## Observation Space
    `Box(6,)` float32 per sub-env: cos θ1, sin θ1, cos θ2, sin θ2, θ̇1 (±4π), θ̇2 (±9π); θ2 is relative to
    link 1. A freshly reset sub-env's cos/sin are computed in float32, as the scalar env does.

    ## Starting State
    θ1, θ2, θ̇1, θ̇2 each uniform in [-0.1, 0.1] (reset `options` "low"/"high"), rounded to float32.

    ## Rewards
    -1 per step that does not reach the target height, 0 on the step that does.

    ## Episode End
    Terminated when -cos θ1 - cos(θ1 + θ2) > 1; truncated after `max_episode_steps` (500) steps.
    """

    dt = 0.2
    LINK_LENGTH_1 = 1.0
    LINK_MASS_1 = 1.0
    LINK_MASS_2 = 1.0
    LINK_COM_POS_1 = 0.5
    LINK_COM_POS_2 = 0.5
    LINK_MOI = 1.0
    GRAVITY = 9.8
    MAX_VEL_1 = 4 * np.pi
    MAX_VEL_2 = 9 * np.pi
    TORQUES = np.array([-1.0, 0.0, 1.0])

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = 500,
        render_mode: str | None = None,
        book_or_nips: str = "book",
    ) -> None:
        """`book_or_nips`: "book" (Acrobot-v1's default) or "nips" dynamics, as the scalar env's attribute."""
        if book_or_nips not in ("book", "nips"):
            raise ValueError(f"book_or_nips must be 'book' or 'nips', got {book_or_nips!r}")
        self.book_or_nips = book_or_nips
        high = np.array([1.0, 1.0, 1.0, 1.0, self.MAX_VEL_1, self.MAX_VEL_2], dtype=np.float32)
        super().__init__(
            num_envs, max_episode_steps, spaces.Box(-high, high, dtype=np.float32), spaces.Discrete(3), render_mode
        )

    def _initial_state(self, rng: np.random.Generator, options: dict[str, Any] | None) -> np.ndarray:
        low, high = utils.maybe_parse_reset_bounds(options, -0.1, 0.1)
        return rng.uniform(low=low, high=high, size=(4,)).astype(np.float32).astype(np.float64)

    def _advance(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torque = self.TORQUES[self._discrete_actions(actions)]
        th1, th2, w1, w2 = self._rk4(state, torque)
        th1, th2 = self._wrap_angle(th1), self._wrap_angle(th2)
        w1 = np.minimum(np.maximum(w1, -self.MAX_VEL_1), self.MAX_VEL_1)
        w2 = np.minimum(np.maximum(w2, -self.MAX_VEL_2), self.MAX_VEL_2)
        terminated = -np.cos(th1) - np.cos(th2 + th1) > 1.0
        return np.array([th1, th2, w1, w2]), np.where(terminated, 0.0, -1.0), terminated

    def _rk4(self, y0: np.ndarray, torque: np.ndarray) -> np.ndarray:
        """One classical Runge-Kutta step of length `dt` from y0 (4, n), torque held constant."""
        h = self.dt
        half = h / 2.0
        k1 = self._derivative(y0, torque)
        k2 = self._derivative(y0 + half * k1, torque)
        k3 = self._derivative(y0 + half * k2, torque)
        k4 = self._derivative(y0 + h * k3, torque)
        return y0 + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    def _derivative(self, y: np.ndarray, torque: np.ndarray) -> np.ndarray:
        """d/dt of (θ1, θ2, θ̇1, θ̇2), shape (4, n); the scalar env's operation order, for identical rounding."""
        m1, m2, l1 = self.LINK_MASS_1, self.LINK_MASS_2, self.LINK_LENGTH_1
        lc1, lc2, moi, g = self.LINK_COM_POS_1, self.LINK_COM_POS_2, self.LINK_MOI, self.GRAVITY
        th1, th2, w1, w2 = y
        cos2, sin2 = np.cos(th2), np.sin(th2)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + moi + moi
        d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + moi
        phi2 = m2 * lc2 * g * np.cos(th1 + th2 - np.pi / 2.0)
        coriolis = -m2 * l1 * lc2 * _pow2(w2) * sin2 - 2 * m2 * l1 * lc2 * w2 * w1 * sin2
        phi1 = coriolis + (m1 * lc1 + m2 * l1) * g * np.cos(th1 - np.pi / 2) + phi2
        driven = torque + d2 / d1 * phi1
        if self.book_or_nips == "book":
            driven = driven - m2 * l1 * lc2 * _pow2(w1) * sin2
        acc2 = (driven - phi2) / (m2 * lc2**2 + moi - _pow2(d2) / d1)
        acc1 = -(d2 * acc2 + phi1) / d1
        return np.array([w1, w2, acc1, acc2])

    @staticmethod
    def _wrap_angle(x: np.ndarray) -> np.ndarray:
        """Shift by whole turns into [-π, π] by repeated ±2π, as the scalar env's `wrap` (not a modulo)."""
        turn = np.pi - -np.pi
        while (above := x > np.pi).any():
            x = np.where(above, x - turn, x)
        while (below := x < -np.pi).any():
            x = np.where(below, x + turn, x)
        return x

    def _observe(self, state: np.ndarray) -> np.ndarray:
        th1, th2, w1, w2 = state
        return _rows_to_obs([np.cos(th1), np.sin(th1), np.cos(th2), np.sin(th2), w1, w2])

    def _initial_obs(self, state: np.ndarray) -> np.ndarray:
        return self._observe(state.astype(np.float32))


class MountainCarVectorEnv(BatchedClassicEnv):
    """MountainCar-v0 for `num_envs` sub-envs at once; mirrors `gymnasium.envs.classic_control.mountain_car`.

    A car in a valley between two hills, too weak to drive straight up, must rock back and forth to reach the
    flag on the right hill. velocity += (action - 1)·0.001 - 0.0025·cos(3·position), clipped to ±0.07;
    position += velocity, clipped to [-1.2, 0.6]; hitting the left wall while moving left stops the car.

    ## Action Space
    `Discrete(3)` per sub-env: accelerate left, don't accelerate, accelerate right (batched: `MultiDiscrete`).

    ## Observation Space
    `Box(2,)` float32 per sub-env: position in [-1.2, 0.6], velocity in [-0.07, 0.07].

    ## Starting State
    Position uniform in [-0.6, -0.4] (reset `options` "low"/"high"), velocity 0.

    ## Rewards
    -1 per step, including the step that reaches the goal.

    ## Episode End
    Terminated when position ≥ 0.5 and velocity ≥ `goal_velocity` (0); truncated after `max_episode_steps`
    (200) steps.
    """

    MIN_POSITION = -1.2
    MAX_POSITION = 0.6
    MAX_SPEED = 0.07
    GOAL_POSITION = 0.5
    FORCE = 0.001
    GRAVITY = 0.0025

    def __init__(
        self, num_envs: int = 1, max_episode_steps: int = 200, render_mode: str | None = None, goal_velocity: float = 0
    ) -> None:
        """`goal_velocity`: minimum velocity at the goal position to terminate, as the scalar env's argument."""
        self.goal_velocity = goal_velocity
        low = np.array([self.MIN_POSITION, -self.MAX_SPEED], dtype=np.float32)
        high = np.array([self.MAX_POSITION, self.MAX_SPEED], dtype=np.float32)
        super().__init__(
            num_envs, max_episode_steps, spaces.Box(low, high, dtype=np.float32), spaces.Discrete(3), render_mode
        )

    def _initial_state(self, rng: np.random.Generator, options: dict[str, Any] | None) -> np.ndarray:
        low, high = utils.maybe_parse_reset_bounds(options, -0.6, -0.4)
        return np.array([rng.uniform(low=low, high=high), 0.0])

    def _advance(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position, velocity = state
        push = (self._discrete_actions(actions) - 1) * self.FORCE
        velocity = velocity + (push + np.cos(3 * position) * (-self.GRAVITY))
        velocity = np.clip(velocity, -self.MAX_SPEED, self.MAX_SPEED)
        position = np.clip(position + velocity, self.MIN_POSITION, self.MAX_POSITION)
        velocity = np.where((position == self.MIN_POSITION) & (velocity < 0), 0.0, velocity)
        terminated = (position >= self.GOAL_POSITION) & (velocity >= self.goal_velocity)
        return np.array([position, velocity]), np.full(self.num_envs, -1.0), terminated

    def _observe(self, state: np.ndarray) -> np.ndarray:
        return _rows_to_obs(list(state))


class PendulumVectorEnv(BatchedClassicEnv):
    """Pendulum-v1 for `num_envs` sub-envs at once; mirrors `gymnasium.envs.classic_control.pendulum.PendulumEnv`.

    Swing a frictionless pendulum up and hold it upright. θ̇ += (3g/(2l)·sin θ + 3/(ml²)·u)·dt, clipped to ±8;
    θ += θ̇·dt, with dt = 0.05, m = l = 1 and `g` = 10.

    ## Action Space
    `Box(-2, 2, (1,), float32)` per sub-env: the torque u, clipped to ±2 (batched: shape (num_envs, 1); shape
    (num_envs,) is accepted too). Arithmetic follows the actions' dtype, as in the scalar env.

    ## Observation Space
    `Box(3,)` float32 per sub-env: cos θ, sin θ in [-1, 1] and θ̇ in [-8, 8]; θ = 0 is upright.

    ## Starting State
    θ uniform in [-π, π], θ̇ uniform in [-1, 1] (reset `options` "x_init"/"y_init" set the bounds).

    ## Rewards
    -(normalize(θ)² + 0.1·θ̇² + 0.001·u²) of the state before the step, with θ normalised to [-π, π); at most 0.

    ## Episode End
    Never terminates; truncated after `max_episode_steps` (200) steps.
    """

    MAX_SPEED = 8
    MAX_TORQUE = 2.0
    DT = 0.05
    MASS = 1.0
    LENGTH = 1.0
    DEFAULT_X = np.pi
    DEFAULT_Y = 1.0

    def __init__(
        self, num_envs: int = 1, max_episode_steps: int = 200, render_mode: str | None = None, g: float = 10.0
    ) -> None:
        """`g`: gravitational acceleration, as the scalar env's argument."""
        self.g = g
        high = np.array([1.0, 1.0, self.MAX_SPEED], dtype=np.float32)
        action_space = spaces.Box(-self.MAX_TORQUE, self.MAX_TORQUE, shape=(1,), dtype=np.float32)
        super().__init__(
            num_envs, max_episode_steps, spaces.Box(-high, high, dtype=np.float32), action_space, render_mode
        )

    def _initial_state(self, rng: np.random.Generator, options: dict[str, Any] | None) -> np.ndarray:
        options = options or {}
        x = utils.verify_number_and_cast(options.get("x_init", self.DEFAULT_X))
        y = utils.verify_number_and_cast(options.get("y_init", self.DEFAULT_Y))
        high = np.array([x, y])
        return rng.uniform(low=-high, high=high)

    def _advance(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        th, thdot = state
        u = np.clip(np.asarray(actions).reshape(self.num_envs), -self.MAX_TORQUE, self.MAX_TORQUE)
        m, length, g, dt = self.MASS, self.LENGTH, self.g, self.DT
        normalized = ((th + np.pi) % (2 * np.pi)) - np.pi
        cost = _pow2(normalized) + 0.1 * _pow2(thdot) + 0.001 * _pow2(u)
        thdot_next = thdot + (3 * g / (2 * length) * np.sin(th) + 3.0 / (m * length**2) * u) * dt
        thdot_next = np.clip(thdot_next, -self.MAX_SPEED, self.MAX_SPEED)
        th_next = th + thdot_next * dt
        return np.array([th_next, thdot_next]), -cost, np.zeros(self.num_envs, dtype=np.bool_)

    def _observe(self, state: np.ndarray) -> np.ndarray:
        th, thdot = state
        return _rows_to_obs([np.cos(th), np.sin(th), thdot])


class SeededCartPoleVectorEnv(BatchedClassicEnv):
    """CartPole for `num_envs` sub-envs at once, each with its own generator; mirrors
    `gymnasium.envs.classic_control.cartpole.CartPoleEnv` (Gymnasium's `CartPoleVectorEnv` shares one generator).

    ## Action Space
    `Discrete(2)` per sub-env: push the cart left (0) or right (1) with force 10 N (batched: `MultiDiscrete`).

    ## Observation Space
    `Box(4,)` float32 per sub-env: cart position (±4.8), cart velocity, pole angle (±0.418 rad), pole angular
    velocity.

    ## Starting State
    All four state variables uniform in [-0.05, 0.05] (reset `options` "low"/"high").

    ## Rewards
    +1 per step, including the terminating one (with `sutton_barto_reward`: 0 per step, -1 on termination).

    ## Episode End
    Terminated when |x| > 2.4 or |θ| > 12°; truncated after `max_episode_steps` (500 for v1, 200 for v0).
    Euler integration with τ = 0.02 s.
    """

    GRAVITY = 9.8
    MASSCART = 1.0
    MASSPOLE = 0.1
    TOTAL_MASS = MASSPOLE + MASSCART
    LENGTH = 0.5
    POLEMASS_LENGTH = MASSPOLE * LENGTH
    FORCE_MAG = 10.0
    TAU = 0.02
    THETA_THRESHOLD = 12 * 2 * math.pi / 360
    X_THRESHOLD = 2.4

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = 500,
        sutton_barto_reward: bool = False,
        render_mode: str | None = None,
    ) -> None:
        high = np.array([self.X_THRESHOLD * 2, np.inf, self.THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
        super().__init__(
            num_envs, max_episode_steps, spaces.Box(-high, high, dtype=np.float32), spaces.Discrete(2), render_mode
        )
        self.sutton_barto_reward = sutton_barto_reward

    def _initial_state(self, rng: np.random.Generator, options: dict[str, Any] | None) -> np.ndarray:
        low, high = utils.maybe_parse_reset_bounds(options, -0.05, 0.05)
        return rng.uniform(low=low, high=high, size=(4,))

    def _advance(self, state: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, x_dot, theta, theta_dot = state
        force = np.where(self._discrete_actions(actions) == 1, self.FORCE_MAG, -self.FORCE_MAG)
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + self.POLEMASS_LENGTH * np.square(theta_dot) * sintheta) / self.TOTAL_MASS
        thetaacc = (self.GRAVITY * sintheta - costheta * temp) / (
            self.LENGTH * (4.0 / 3.0 - self.MASSPOLE * np.square(costheta) / self.TOTAL_MASS)
        )
        xacc = temp - self.POLEMASS_LENGTH * thetaacc * costheta / self.TOTAL_MASS
        state = np.array(
            [
                x + self.TAU * x_dot,
                x_dot + self.TAU * xacc,
                theta + self.TAU * theta_dot,
                theta_dot + self.TAU * thetaacc,
            ]
        )
        x, theta = state[0], state[2]
        terminated = (
            (x < -self.X_THRESHOLD)
            | (x > self.X_THRESHOLD)
            | (theta < -self.THETA_THRESHOLD)
            | (theta > self.THETA_THRESHOLD)
        )
        if self.sutton_barto_reward:
            reward = np.where(terminated, -1.0, 0.0)
        else:
            reward = np.ones(self.num_envs)
        return state, reward, terminated

    def _observe(self, state: np.ndarray) -> np.ndarray:
        return state.T.astype(np.float32, order="C")
