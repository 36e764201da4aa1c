"""`rlbench bench textgen`: generation and training-update throughput on TextGen, measured side by side."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from rlbench.envs.textgen import ENV_ID, TextGenConfig
from rlbench.envs.textgen_lm import load_or_train_sft
from rlbench.matrix import algo_for
from rlbench.textgen_task import make_textgen_task
from rlbench.train import Trainer


def benchmark(
    algo: str = "ppo", repeats: int = 10, seed: int = 0, env_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Tokens/s of generating one update's batch and of one training update on it, median over `repeats`.

    One thread (DESIGN §6). The update is rlbench.train's Trainer.update, so it includes everything the loop
    does per update (advantages, the gradient-noise probe on the updates it measures, epochs × minibatches,
    critic). Returns the batch shape, median seconds and tokens/s of both phases, parameter counts, and the SFT
    model's accuracy, train time and whether this call trained it (`sft_from_cache` False) or loaded it.
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = algo_for(algo, ENV_ID)
    kwargs = env_kwargs or {}
    sft = load_or_train_sft(TextGenConfig(**kwargs))  # before the task, which would otherwise train it
    task = make_textgen_task(ENV_ID, kwargs, cfg, seed, eval_episodes=0)
    trainer = Trainer(cfg, task, seed=seed)
    gen_s, update_s, tokens = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        traj = task.collector.collect(task.policy, trainer.action_rng)
        t1 = time.perf_counter()
        trainer.update(traj, progress=0.0)
        t2 = time.perf_counter()
        gen_s.append(t1 - t0)
        update_s.append(t2 - t1)
        tokens.append(traj.env_steps)
    gen_med, update_med, tok = float(np.median(gen_s)), float(np.median(update_s)), float(np.mean(tokens))
    return {
        "algo": algo,
        "sequences_per_update": int(traj.mask.shape[0]),
        "tokens_per_update": tok,
        "collect_s": gen_med,
        "update_s": update_med,
        "collect_tokens_per_s": tok / gen_med,
        "update_tokens_per_s": tok / update_med,
        "params_policy": sum(p.numel() for p in task.policy.parameters()),
        "params_critic": sum(p.numel() for p in task.critic.parameters()) if task.critic else 0,
        **sft.meta,
        "sft_from_cache": sft.from_cache,
    }


def sft_message(row: dict[str, Any]) -> str:
    """One line on the SFT reference of a benchmark row: its gold reward, and whether it was trained now
    (with the time it took here) or loaded from the cache (with the time it took when the cache was made)."""
    gold = f"gold {row['sft_gold_sampled']:.3f} sampled, {row['sft_gold_greedy']:.3f} greedy"
    if row["sft_from_cache"]:
        origin = f"loaded from the cache (training took {row['sft_time_s']:.1f} s on the machine that made it)"
    else:
        origin = f"trained now in {row['sft_time_s']:.1f} s on this machine, then cached"
    return f"SFT reference: {gold}; {origin}"
