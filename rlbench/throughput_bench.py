"""Seeds per minute: env steps/s of a worker training a batch of seeds together (rlbench.train.train_batch) at
several seed-batch sizes, against a batch of one and Stable-Baselines3's PPO, measured side by side in one process.

Every run is a fraction of the env's `quick` budget with the quick preset's evaluations, one torch thread. A
round trains each seed-batch size once (seeds 0 … K−1 together) and SB3's PPO with `ppo`'s hyperparameters on
seed 0 (classic envs); rounds interleave the sizes so a slow spell of the machine hits all of them, and each size
keeps its best round. Throughput is env steps ÷ wall time, the runs' wall_time_s (training and evaluations; building
networks and envs excluded, for rlbench and SB3 alike). The default matrix's wall time at 5 seeds, a process per
run, against 10 seeds in batches of 10 (`matrix_wall_times`) runs two whole sweeps, so it is separate.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence

import pandas as pd
import torch

from rlbench.matrix import EnvRequest, build_cells
from rlbench.registry import BUILTIN_ENVS, is_text
from rlbench.spec import Status
from rlbench.train import Crash, train_batch

DEFAULT_BATCHES = (1, 5, 10, 20)
COLUMNS = ["algo", "env", "seed_batch", "env_steps", "wall_s", "env_steps_per_s"]


def bench_specs(algo: str, env_id: str, seeds: int, fraction: float, group_size: int = 8) -> list:
    """The RunSpecs of seeds 0 … seeds−1 of `algo` on env_id: `fraction` of the env's quick budget, the quick
    preset's evaluations."""
    steps = max(1, int(fraction * BUILTIN_ENVS[env_id].budgets["quick"]))
    return build_cells([algo], [EnvRequest(env_id)], "quick", list(range(seeds)), steps, [group_size], [])


def _time_batch(specs: list) -> tuple[int, float]:
    """(env steps, wall seconds) of training `specs` as one seed batch: the runs' wall_time_s summed (training and
    evaluations, each run's share of what the batch did together); raises if a run did not end ok."""
    results = train_batch(specs)
    for spec, result in zip(specs, results):
        if isinstance(result, Crash) or result.summary["status"] != Status.OK:
            reason = result.reason if isinstance(result, Crash) else result.summary["reason"]
            raise RuntimeError(f"{spec.algo.name} on {spec.env_id}, seed {spec.seed}: {reason}")
    return sum(r.summary["env_steps"] for r in results), sum(r.summary["wall_time_s"] for r in results)


def _time_sb3(env_id: str, fraction: float) -> tuple[int, float]:
    """(env steps, wall seconds) of one SB3 PPO run with ppo's settings (the sb3_ppo column), seed 0."""
    from rlbench.sb3_runner import train_sb3

    summary = train_sb3(bench_specs("sb3_ppo", env_id, 1, fraction)[0]).summary
    return summary["env_steps"], summary["wall_time_s"]


def throughput(
    algos: Sequence[str] = ("ppo", "grpo"),
    envs: Sequence[str] = ("CartPole-v1", "Acrobot-v1", "rlbench/TextGen-v0"),
    batches: Sequence[int] = DEFAULT_BATCHES,
    fraction: float = 0.1,
    rounds: int = 2,
    sb3: bool = True,
) -> pd.DataFrame:
    """One row per (algo, env, seed batch) — and `sb3_ppo` on the classic envs when `sb3` — with columns COLUMNS
    from each one's best round, plus `vs_batch_1` (env steps/s ÷ the same algo and env at seed batch 1) and
    `vs_sb3` (÷ SB3 PPO on the env)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best: dict[tuple[str, str, int], tuple[int, float]] = {}
    try:
        for _ in range(rounds):
            for env_id in envs:
                for algo in algos:
                    for k in batches:
                        _keep(best, (algo, env_id, k), _time_batch(bench_specs(algo, env_id, k, fraction)))
                if sb3 and not is_text(env_id):
                    _keep(best, ("sb3_ppo", env_id, 1), _time_sb3(env_id, fraction))
    finally:
        torch.set_num_threads(threads)
    rows = [
        {"algo": a, "env": e, "seed_batch": k, "env_steps": n, "wall_s": w, "env_steps_per_s": n / w}
        for (a, e, k), (n, w) in best.items()
    ]
    df = pd.DataFrame(rows, columns=COLUMNS)
    one = df[df.seed_batch == 1].set_index(["algo", "env"])["env_steps_per_s"]
    df["vs_batch_1"] = df.env_steps_per_s / [one[(a, e)] for a, e in zip(df.algo, df.env)]
    sb3_rate = df[df.algo == "sb3_ppo"].set_index("env")["env_steps_per_s"]
    df["vs_sb3"] = df.env_steps_per_s / df.env.map(sb3_rate)
    return df


def _keep(best: dict, key: tuple, measured: tuple[int, float]) -> None:
    """Keep the faster of the stored and the new (env steps, wall seconds) for `key`."""
    old = best.get(key)
    if old is None or measured[0] / measured[1] > old[0] / old[1]:
        best[key] = measured


def matrix_wall_times(jobs: int | None = None) -> pd.DataFrame:
    """Wall time of `rlbench run --algos all` (the default matrix, no report) at 5 seeds with a process per run
    (--seed-batch 1, the execution before seed batches) and at 10 seeds in batches of 10, one after the other,
    each in a fresh temporary directory; one row per sweep (seeds, seed_batch, runs, wall_s)."""
    from rlbench import api

    rows = []
    for seeds, seed_batch in ((5, 1), (10, 10)):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            sweep = api.run("all", seeds=seeds, out=out, jobs=jobs, seed_batch=seed_batch, report=False)
            wall = time.perf_counter() - start
            rows.append({"seeds": seeds, "seed_batch": seed_batch, "runs": len(sweep.runs()), "wall_s": wall})
    return pd.DataFrame(rows)
