"""Load a sweep directory into tidy frames for the report: summaries, per-update metrics, evaluations.

Nothing here computes statistics; it only reads the run store (rlbench.store: the plan and one record per
planned run) and tidies names and order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rlbench import registry, store
from rlbench.algos import order_key
from rlbench.spec import DONE

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
    """One row per planned run: env, algo, seed, status, reason, summary fields (finished runs), and the spec's
    steps, group_size, kl_coef, advantage, policy_loss."""
    metrics: pd.DataFrame
    """Per update of every finished run: env, algo, seed, then metrics.parquet's columns."""
    evals: pd.DataFrame
    """Per evaluation of every finished run: env, algo, seed, then evals.parquet's columns."""
    envs: tuple[str, ...]
    algos: tuple[str, ...]
    """Every env and algorithm of the plan (finished or not), in report order."""
    seeds: tuple[int, ...]
    configs: dict[tuple[str, str], dict]
    """(env, algo) → the resolved AlgoConfig of the cell as planned (from its first run)."""
    left_out: tuple[str, ...] = ()
    """Run directories under `out` that the plan does not hold (left out of the report), relative to `out`."""

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


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["env", "algo", "seed"])


def load_sweep(out: Path) -> Sweep:
    """Read the plan of `out` and every run it holds (rlbench.store.read_sweep). Raises ReportError for a missing
    path or a directory without a plan."""
    out = Path(out)
    if not out.exists():
        raise ReportError(f"no such directory: {out}")
    if not out.is_dir():
        raise ReportError(f"not a directory: {out}")
    try:
        records, strays = store.read_sweep(out)
    except store.SweepError as err:
        raise ReportError(str(err)) from None
    if not records:
        raise ReportError(f"no runs under {out}: its {store.PLAN} plans none")
    runs = store.summary_rows(records)
    algo_fields = ("group_size", "kl_coef", "advantage", "policy_loss")
    for field in algo_fields:
        runs[field] = [getattr(r.spec.algo, field) for r in records]
    runs["steps"] = [r.spec.steps for r in records]
    configs = {}
    for r in records:
        configs.setdefault((r.spec.env_id, r.spec.algo.name), dataclasses.asdict(r.spec.algo))
    algos = tuple(sorted(runs["algo"].unique(), key=order_key))
    rank = {a: i for i, a in enumerate(algos)}
    order = sorted(
        range(len(records)),
        key=lambda i: (records[i].spec.env_id, rank[records[i].spec.algo.name], records[i].spec.seed),
    )
    records = [records[i] for i in order]
    runs = runs.iloc[order].reset_index(drop=True)
    metrics, evals = [], []
    for r in records:
        for frame, sink in ((r.metrics(), metrics), (r.evals(), evals)):
            if not frame.empty:
                frame.insert(0, "seed", r.spec.seed)
                frame.insert(0, "algo", r.spec.algo.name)
                frame.insert(0, "env", r.spec.env_id)
                sink.append(frame)
    envs = tuple(sorted(runs["env"].unique()))
    seeds = tuple(sorted(int(s) for s in runs["seed"].unique()))
    left_out = tuple(str(p.relative_to(out)) for p in strays)
    return Sweep(out, runs, _concat(metrics), _concat(evals), envs, algos, seeds, configs, left_out)


def is_textgen(env_id: str) -> bool:
    """Whether the env is of the registry's `text` family (the TextGen sections and claims)."""
    return registry.is_text(env_id)


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
