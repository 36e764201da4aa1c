"""`rlbench bench probe`: what measurement costs a run, with the batched gradient-noise probe and with one
backward per split (the probe as it was), side by side in one process."""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch

from rlbench.matrix import EnvRequest, build_cells
from rlbench.train import train

MODES = {True: "batched", False: "one backward per split"}
"""Trainer's batched_probe → the name of that way of computing the probe."""
WARMUP_STEPS = 2048
"""Env steps of the untimed run per env and mode that comes first (imports, first calls of vmap and kernels)."""
COLUMNS = ["algo", "env", "probe", "env_steps", "wall_time_s", "probe_time_s", "reference_time_s", "measure_share"]


def compare(
    algos: list[str], envs: list[str], preset: str = "quick", seed: int = 0, group_size: int = 8
) -> pd.DataFrame:
    """Every (algorithm, env) run of `preset` and `seed` trained twice, with each probe mode (MODES; the order
    alternates from cell to cell), one torch thread, after an untimed short run per env and mode. Training is
    bitwise the same in both, so the runs differ only in the probe's cost. One row per run with COLUMNS (the
    run summary's fields; measure_share = (probe_time_s + reference_time_s) / wall_time_s). Raises MatrixError
    for a bad name, budget or G."""
    specs = build_cells(list(algos), [EnvRequest(env) for env in envs], preset, [seed], None, [group_size], [])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for spec in {spec.env_id: spec for spec in specs}.values():
            for batched in MODES:
                train(dataclasses.replace(spec, steps=min(spec.steps, WARMUP_STEPS), eval_points=1), batched)
        for k, spec in enumerate(specs):
            for batched in (True, False) if k % 2 == 0 else (False, True):
                summary = train(spec, batched_probe=batched).summary
                rows.append({"algo": spec.algo.name, "env": spec.env_id, "probe": MODES[batched], **summary})
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows)[COLUMNS]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (algo, env): each mode's measure_share, the batched run's share of the reference forward
    alone, `probe_ratio` = the batched probe's time ÷ one backward per split's, and `wall_ratio` = the batched
    run's wall time ÷ the other's."""
    values = ["measure_share", "wall_time_s", "probe_time_s", "reference_time_s"]
    wide = df.pivot_table(index=["algo", "env"], columns="probe", values=values, sort=False)
    batched, looped = MODES[True], MODES[False]
    return pd.DataFrame(
        {
            "share_batched": wide["measure_share", batched],
            "share_looped": wide["measure_share", looped],
            "reference_share": wide["reference_time_s", batched] / wide["wall_time_s", batched],
            "probe_ratio": wide["probe_time_s", batched] / wide["probe_time_s", looped],
            "wall_ratio": wide["wall_time_s", batched] / wide["wall_time_s", looped],
            "wall_batched_s": wide["wall_time_s", batched],
        }
    ).reset_index()
