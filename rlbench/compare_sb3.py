"""rlbench's `ppo` against Stable-Baselines3's PPO with the same hyperparameters, side by side in one process.

Both implementations get the resolved preset (`rlbench.matrix.algo_for("ppo", env_id)`; SB3 through the one
mapping, rlbench.sb3_mapping, which also lists where the two still differ), the same env-step budget and seeds,
one torch thread, and rlbench's evaluation before and after training (held-out episodes, deterministic actions).
SB3 trains as the `sb3_ppo` matrix column does (rlbench.sb3_runner). Throughput is env steps ÷ each run's
wall_time_s (training and the two evaluations; building the model and envs excluded for both). Seeds run
rlbench-then-SB3 and SB3-then-rlbench alternately so neither always runs on a warmer process.
"""

from __future__ import annotations

import pandas as pd
import torch

from rlbench.algos.config import AlgoConfig
from rlbench.matrix import algo_for
from rlbench.sb3_mapping import rollout_budget, sb3_kwargs
from rlbench.spec import RunSpec, Status
from rlbench.train import train

COLUMNS = ["impl", "seed", "env_steps", "wall_time_s", "env_steps_per_s", "final_return"]


def _run(impl: str, cfg: AlgoConfig, env_id: str, seed: int, steps: int, eval_episodes: int) -> dict:
    """One run of `cfg` (rlbench's `ppo` or the `sb3_ppo` column) → a row of COLUMNS."""
    spec = RunSpec(cfg, env_id, seed, steps, eval_episodes, eval_points=1)
    if cfg.trainer == "rlbench":
        s = train(spec).summary
    else:
        from rlbench.sb3_runner import train_sb3

        s = train_sb3(spec).summary
    if s["status"] != Status.OK:
        raise RuntimeError(f"{cfg.name} seed {seed}: {s['status']} ({s['reason']})")
    return {"impl": impl, "seed": seed, **{k: s[k] for k in COLUMNS[2:]}}


def compare(
    env_id: str = "CartPole-v1", steps: int = 100_000, seeds: list[int] = [0, 1, 2], eval_episodes: int = 10
) -> pd.DataFrame:
    """Train rlbench `ppo` and the equivalent SB3 PPO (`sb3_ppo`) for `steps` env steps per seed, one torch thread.

    Returns one row per (impl ∈ {"rlbench", "sb3"}, seed) with columns COLUMNS. Raises ValueError (MatrixError)
    for an env or preset SB3 cannot run, RuntimeError if an rlbench run faults.
    """
    impls = {"rlbench": algo_for("ppo", env_id), "sb3": algo_for("sb3_ppo", env_id)}
    sb3_kwargs(impls["sb3"], rollout_budget(impls["sb3"], steps) or 1)  # fail before any training
    order = list(impls)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for k, seed in enumerate(seeds):
            for impl in order if k % 2 == 0 else order[::-1]:
                rows.append(_run(impl, impls[impl], env_id, seed, steps, eval_episodes))
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
