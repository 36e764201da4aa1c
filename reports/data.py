"""Load a sweep directory into tidy frames for the report: summaries, per-update metrics, evaluations.

Nothing here computes statistics; it only reads the run store (rlbench.store) and tidies names and order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rlbench import store
from rlbench.algos import order_key

DONE = ("ok", "diverged", "env_nan")
"""Statuses of runs that finished training (their metrics and evaluations exist)."""

# Colour-blind-safe qualitative palette (Okabe & Ito 2008; Wong 2011, Nature Methods 8:441) with Paul Tol's
# olive in place of Okabe–Ito yellow (too faint on white), then Tol's muted scheme for user-added variants.
OKABE_ITO = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#999933",
    "#000000",
)
TOL_MUTED = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499")
FIXED_COLOURS = {
    "pg": "#0072B2",
    "critic": "#E69F00",
    "ppo": "#009E73",
    "ppo_kl": "#D55E00",
    "grpo-g2": "#56B4E9",
    "grpo-g4": "#CC79A7",
    "grpo-g8": "#999933",
    "grpo-g16": "#000000",
    "pg_centred": "#882255",
    "ppo_noclip": "#332288",
    "grpo_critic-g4": "#44AA99",
    "grpo_critic-g8": "#DDCC77",
}
"""One colour per known algorithm column, the same in every report; the columns that share a learning-curve
panel (`reports.render.panel_groups`) get clearly different colours."""


class ReportError(ValueError):
    """The report cannot be made: the path does not exist, or holds no runs. The CLI maps it to exit code 2."""


@dataclass(frozen=True)
class Sweep:
    """A sweep directory read into frames (one row per run, per update, per evaluation)."""

    out: Path
    runs: pd.DataFrame
    """One row per run: env, algo, seed, status, reason, summary fields, and config fields group_size,
    kl_coef, advantage, policy_loss."""
    metrics: pd.DataFrame
    """Per update of every finished run: env, algo, seed, then metrics.parquet's columns."""
    evals: pd.DataFrame
    """Per evaluation of every finished run: env, algo, seed, then evals.parquet's columns."""
    envs: tuple[str, ...]
    algos: tuple[str, ...]
    """Every env and algorithm seen in any run directory (finished or not), in report order."""
    seeds: tuple[int, ...]
    configs: dict[tuple[str, str], dict]
    """(env, algo) → the resolved AlgoConfig of the cell as recorded in config.json (from its first run)."""

    @property
    def done(self) -> pd.DataFrame:
        """Runs that finished training."""
        return self.runs[self.runs["status"].isin(DONE)]

    def colours(self) -> dict[str, str]:
        """Algorithm → colour: fixed for known names, free colour-blind-safe colours for the rest."""
        return palette(self.algos)


def palette(algos: tuple[str, ...] | list[str]) -> dict[str, str]:
    used = {FIXED_COLOURS[a] for a in algos if a in FIXED_COLOURS}
    spare = [c for c in OKABE_ITO + TOL_MUTED if c not in used]
    out = {}
    for a in sorted(algos, key=order_key):
        if a in FIXED_COLOURS:
            out[a] = FIXED_COLOURS[a]
        else:
            out[a] = spare.pop(0) if spare else TOL_MUTED[len(out) % len(TOL_MUTED)]
    return out


def _read_config_fields(run_dir: str) -> dict:
    cfg = store.read_json(Path(run_dir) / store.CONFIG)
    algo = cfg.get("algo", {})
    return {
        "algo_config": algo,
        "group_size": algo.get("group_size"),
        "kl_coef": algo.get("kl_coef"),
        "advantage": algo.get("advantage"),
        "policy_loss": algo.get("policy_loss"),
        "steps": cfg.get("steps"),
    }


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["env", "algo", "seed"])


def load_sweep(out: Path) -> Sweep:
    """Read every run under `out`. Raises ReportError for a missing path or a directory with no runs."""
    out = Path(out)
    if not out.exists():
        raise ReportError(f"no such directory: {out}")
    if not out.is_dir():
        raise ReportError(f"not a directory: {out}")
    runs = store.load_summaries(out)
    if runs.empty:
        raise ReportError(f"no runs under {out}: expected <env>/<algo>/seed<k>/config.json (make one with rlbench run)")
    if "reason" not in runs:
        runs["reason"] = ""
    runs["reason"] = runs["reason"].fillna("").astype(str)
    unfinished = runs["status"] == "unfinished"
    runs.loc[unfinished & (runs["reason"] == ""), "reason"] = "no summary.json or failure.json (unfinished)"
    cfg = pd.DataFrame([_read_config_fields(d) for d in runs["run_dir"]], index=runs.index)
    runs = pd.concat([runs, cfg.drop(columns="algo_config")], axis=1)
    configs = {}
    for env, algo, config in zip(runs["env"], runs["algo"], cfg["algo_config"]):
        configs.setdefault((env, algo), config)
    algos = tuple(sorted(runs["algo"].unique(), key=order_key))
    runs["_rank"] = runs["algo"].map({a: i for i, a in enumerate(algos)})
    runs = runs.sort_values(["env", "_rank", "seed"]).drop(columns="_rank").reset_index(drop=True)
    metrics, evals = [], []
    for row in runs.itertuples():
        if row.status not in DONE:
            continue
        for name, sink in ((store.METRICS, metrics), (store.EVALS, evals)):
            path = Path(row.run_dir) / name
            if path.is_file():
                df = pd.read_parquet(path)
                df.insert(0, "seed", row.seed)
                df.insert(0, "algo", row.algo)
                df.insert(0, "env", row.env)
                sink.append(df)
    envs = tuple(sorted(runs["env"].unique()))
    seeds = tuple(sorted(int(s) for s in runs["seed"].unique()))
    return Sweep(out, runs, _concat(metrics), _concat(evals), envs, algos, seeds, configs)


def is_textgen(env_id: str) -> bool:
    return "textgen" in env_id.lower()


def kl_siblings(configs: dict[tuple[str, str], dict]) -> dict[tuple[str, str], str]:
    """(env, column with β = kl_coef > 0) → the column of the same env whose resolved config is the same but for
    β = 0 (and its name): the unpenalised run a KL penalty is compared with (`ppo` for `ppo_kl`, `x-b0` for
    `x-b0.3` on the β axis). Columns without such a sibling are left out."""

    def key(cfg: dict) -> str:
        return repr(sorted((k, v) for k, v in cfg.items() if k not in ("name", "kl_coef")))

    unpenalised = {(env, key(cfg)): col for (env, col), cfg in configs.items() if cfg.get("kl_coef") == 0}
    return {
        (env, col): unpenalised[env, key(cfg)]
        for (env, col), cfg in configs.items()
        if (cfg.get("kl_coef") or 0) > 0 and (env, key(cfg)) in unpenalised
    }
