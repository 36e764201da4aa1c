"""rlbench's `ppo` against Stable-Baselines3's PPO with the same hyperparameters, side by side in one process.

Both implementations get the resolved preset (`rlbench.matrix.algo_for("ppo", env_id)`), the same env-step
budget and seeds, one torch thread, and are evaluated on the same held-out episodes: episode i resets with
seed `EVAL_SEED_BASE − i` and actions are deterministic. Throughput is env steps ÷ wall clock of the training
call (rlbench: `train`'s own `wall_time_s`; SB3: `model.learn`); building the model/envs is excluded for both.
Seeds run rlbench-then-SB3 and SB3-then-rlbench alternately so neither always runs on a warmer process.

Mapping (rlbench → SB3): n_envs, n_steps, gamma, gae_lambda, clip → clip_range, ent_coef, max_grad_norm,
norm_adv → normalize_advantage, epochs → n_epochs, batch_size = n_envs·n_steps / minibatches, separate
pi/vf MLPs [hidden, hidden] with Tanh and orthogonal init (gains √2 / 0.01 / 1), Adam eps 1e-5.

Where the two still differ (deliberately aligned ones marked *):
- * Value loss: rlbench uses ½·MSE (CleanRL), SB3 plain MSE, so SB3 gets vf_coef/2 for the same objective.
- * LR annealing: rlbench decays with the progress *before* each update (first update at full lr), SB3 with
  the progress *after* the rollout; SB3's schedule is shifted by one rollout to match.
- Work rlbench does every update that SB3 does not: gradient-noise measurement (noise_splits extra
  forward/backward passes), a frozen-reference forward for kl_ref, per-minibatch metric syncs; FLOP counting
  on the first update. rlbench's timed call also includes its two evaluations (before and after training).
- Envs: rlbench steps CartPole through Gymnasium's vector entry point (NEXT_STEP autoreset; the reset step is
  not counted, so a rollout has ≤ n_envs·n_steps env steps); SB3 uses DummyVecEnv + Monitor over gym.make
  envs (same-step autoreset, exactly n_envs·n_steps per rollout) and its own logger. Env steps therefore
  differ by less than one rollout.
- Advantage normalization: rlbench divides by the population std, SB3 by the sample std (Bessel).
- Truncation: rlbench bootstraps V(final obs) inside GAE, SB3 adds γ·V(final obs) to the last reward.
- Randomness: different RNG streams (torch Generator vs global torch/numpy), so equal seeds ≠ equal runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from rlbench import registry
from rlbench.algos.config import AlgoConfig
from rlbench.matrix import algo_for
from rlbench.spec import RunSpec, Status
from rlbench.task import EVAL_SEED_BASE
from rlbench.train import train

COLUMNS = ["impl", "seed", "env_steps", "wall_time_s", "env_steps_per_s", "final_return"]


def sb3_kwargs(cfg: AlgoConfig, total_steps: int) -> dict:
    """Keyword arguments for `stable_baselines3.PPO` equivalent to `cfg`; ValueError if SB3 cannot express it."""
    unsupported = {
        "advantage": cfg.advantage != "gae",
        "policy_loss": cfg.policy_loss != "clip",
        "collect": cfg.collect != "steps",
        "clip": cfg.clip is None,
        "clip_high": cfg.clip_high not in (None, cfg.clip),
        "kl_coef": cfg.kl_coef != 0.0,
        "value_epochs": cfg.value_epochs != 0,
        "minibatches": (cfg.n_envs * cfg.n_steps) % cfg.minibatches != 0,
    }
    bad = [name for name, flag in unsupported.items() if flag]
    if bad:
        raise ValueError(f"{cfg.name}: SB3's PPO has no equivalent of {bad}")
    rollout = cfg.n_envs * cfg.n_steps

    def annealed(left: float) -> float:
        # SB3 passes the progress remaining *after* the rollout; add one rollout back to match rlbench.
        return cfg.lr * min(1.0, left + rollout / total_steps)

    lr: float | Callable[[float], float] = annealed if cfg.anneal_lr else cfg.lr
    return dict(
        n_steps=cfg.n_steps,
        batch_size=rollout // cfg.minibatches,
        n_epochs=cfg.epochs,
        learning_rate=lr,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip,
        normalize_advantage=cfg.norm_adv,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef / 2,  # rlbench's value loss is ½·MSE, SB3's is MSE
        max_grad_norm=cfg.max_grad_norm,
        policy_kwargs=dict(
            net_arch=dict(pi=[cfg.hidden] * 2, vf=[cfg.hidden] * 2),
            activation_fn=torch.nn.Tanh,
            share_features_extractor=False,
        ),
    )


def evaluate_sb3(model, env_id: str, episodes: int, env_kwargs: dict | None = None) -> float:
    """Mean undiscounted return of `model` (deterministic actions) over episodes reset with EVAL_SEED_BASE − i."""
    env = gym.make(env_id, **(env_kwargs or {}))
    returns = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=EVAL_SEED_BASE - i)
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return float(np.mean(returns))


def _run_rlbench(cfg: AlgoConfig, env_id: str, seed: int, steps: int, eval_episodes: int) -> dict:
    s = train(RunSpec(cfg, env_id, seed, steps, eval_episodes, eval_points=1)).summary
    if s["status"] != Status.OK:
        raise RuntimeError(f"rlbench ppo seed {seed}: {s['status']} ({s['reason']})")
    return {"impl": "rlbench", "seed": seed, **{k: s[k] for k in COLUMNS[2:]}}


def _run_sb3(cfg: AlgoConfig, env_id: str, seed: int, steps: int, eval_episodes: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(env_id, n_envs=cfg.n_envs, seed=seed)
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **sb3_kwargs(cfg, steps))
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - start
    env.close()
    n = int(model.num_timesteps)
    return {
        "impl": "sb3",
        "seed": seed,
        "env_steps": n,
        "wall_time_s": wall,
        "env_steps_per_s": n / wall if wall > 0 else math.nan,
        "final_return": evaluate_sb3(model, env_id, eval_episodes),
    }


def compare(
    env_id: str = "CartPole-v1", steps: int = 100_000, seeds: list[int] = [0, 1, 2], eval_episodes: int = 10
) -> pd.DataFrame:
    """Train rlbench `ppo` and the equivalent SB3 PPO for `steps` env steps per seed, one torch thread.

    Returns one row per (impl ∈ {"rlbench", "sb3"}, seed) with columns COLUMNS. Raises ValueError for an env
    with its own rlbench task builder or a preset SB3 cannot express, RuntimeError if an rlbench run faults.
    """
    if registry.task_builder(env_id) is not None:
        raise ValueError(f"{env_id} uses a custom rlbench task; only plain Gymnasium envs compare with SB3")
    cfg = algo_for("ppo", env_id)
    sb3_kwargs(cfg, steps)  # fail before any training
    runners = [_run_rlbench, _run_sb3]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for k, seed in enumerate(seeds):
            for run in runners if k % 2 == 0 else runners[::-1]:
                rows.append(run(cfg, env_id, seed, steps, eval_episodes))
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["impl", "seed"], ignore_index=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per-impl means of env_steps, wall_time_s, env_steps_per_s and final_return (plus final_return_std over
    seeds), and a column `speed_vs_sb3` = impl's mean steps/s ÷ SB3's (rlbench's row holds rlbench ÷ SB3)."""
    cols = ["env_steps", "wall_time_s", "env_steps_per_s", "final_return"]
    out = df.groupby("impl")[cols].mean()
    out["final_return_std"] = df.groupby("impl")["final_return"].std(ddof=0)
    out["speed_vs_sb3"] = out["env_steps_per_s"] / out.loc["sb3", "env_steps_per_s"]
    return out
