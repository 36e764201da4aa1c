"""`rlbench bench probe`: what measurement costs a run — the gradient-noise probe and the frozen reference's
forward passes as shares of its wall time, for several algorithms and envs in one process."""

from __future__ import annotations

import pandas as pd
import torch

from rlbench.matrix import EnvRequest, build_cells
from rlbench.train import train

COLUMNS = [
    "algo",
    "env",
    "env_steps",
    "updates",
    "probed_updates",
    "wall_time_s",
    "probe_time_s",
    "reference_time_s",
    "measure_share",
]


def compare(
    algos: list[str], envs: list[str], preset: str = "quick", seed: int = 0, group_size: int = 8
) -> pd.DataFrame:
    """Every (algorithm, env) run of `preset` and `seed` (group algorithms at G = group_size), one torch thread
    as in a sweep's workers. One row per run with COLUMNS: its summary's times and measure_share =
    (probe_time_s + reference_time_s) / wall_time_s. Raises MatrixError for a bad name, budget or G."""
    specs = build_cells(list(algos), [EnvRequest(env) for env in envs], preset, [seed], None, [group_size], [])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [{"algo": spec.algo.name, "env": spec.env_id, **train(spec).summary} for spec in specs]
    finally:
        torch.set_num_threads(threads)
    runs = pd.DataFrame(rows)
    runs["measure_share"] = (runs["probe_time_s"] + runs["reference_time_s"]) / runs["wall_time_s"]
    return runs[COLUMNS]
