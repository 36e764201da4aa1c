"""Regression fingerprints: a short seeded run of every algorithm preset on each env of ENVS, stored and compared.

A fingerprint is the per-update metrics (without the wall-clock `time/*` columns) and evaluation rows of a
short seeded run of a preset on CartPole-v1 or TextGen (`ENVS`), run with one torch thread, plus the resolved
config and the environment it was produced in. `tests/regression/<env>/<algo>.json` holds one per (env,
preset); `tests/test_fingerprints.py` recomputes them and fails on any difference.

Comparison rule (DESIGN §6: results are reproducible per seed, config, platform, torch version and thread
count):

- same `platform`, `torch` version and `threads` → floats must be **exactly** equal;
- otherwise → floats must agree within `RTOL` relative (with an `ATOL` floor for values near zero), since
  another platform/torch/thread count legitimately changes the last bits (~5e-7 per DESIGN §6) and a few
  updates amplify them only mildly.

Integers (update, env steps, episode counts), column sets, row counts and the config are always compared
exactly. Regenerate deliberately with `regenerate(Path("tests/regression"))` (wired as
`rlbench fingerprints --update`), which prints what changed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

ENVS = {"CartPole-v1": 2048, "rlbench/TextGen-v0": 1500}
"""Env → env-step budget of its fingerprint runs (CartPole: 4 PPO updates of 8 × 64 steps; TextGen: a few
updates of generated tokens). Each runs with the env's matrix settings, as `rlbench run` would."""
SEED = 0
"""Training seed of the fingerprint run."""
EVAL_EPISODES = 2
"""Held-out evaluation episodes (at the end of the run)."""
GROUP_SIZE = 4
"""G used for presets with the group advantage."""
THREADS = 1
"""Torch intra-op threads during the run (what sweep workers use)."""
RTOL = 1e-4
"""Relative tolerance for floats when platform, torch version or thread count differ."""
ATOL = 1e-6
"""Absolute floor of that tolerance, for metrics that are ~0 (e.g. KL to the reference at the first update)."""
MATCH_KEYS = ("platform", "torch", "threads")
"""Environment fields that must all match for the comparison to be exact."""
MAX_LINES = 25
"""At most this many differences are listed per fingerprint; the rest are counted in one line."""

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "tests" / "regression"
"""tests/regression/ of the source checkout."""


def cell_for(algo_name: str, env_id: str):
    """The run as fingerprinted: the matrix's resolution of the preset on env_id (group presets at G =
    GROUP_SIZE), seed SEED, the env's fingerprint budget."""
    from rlbench.matrix import EnvRequest, build_cells

    (cell,) = build_cells([algo_name], [EnvRequest(env_id)], "smoke", [SEED], ENVS[env_id], [GROUP_SIZE], [])
    return dataclasses.replace(cell, eval_episodes=EVAL_EPISODES)


def environment() -> dict[str, Any]:
    """What exact reproducibility depends on (platform, torch, threads) plus versions kept for information."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "platform": f"{platform.system()}-{platform.machine()}",
        "platform_detail": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "numpy": version("numpy"),
        "gymnasium": version("gymnasium"),
    }


def compute(algo_name: str, env_id: str = "CartPole-v1") -> dict[str, Any]:
    """Run the preset's short seeded run on env_id with THREADS torch threads and return its fingerprint."""
    from rlbench.train import train

    cell = cell_for(algo_name, env_id)
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        result = train(
            cell.algo, cell.env_id, cell.env_kwargs, cell.seed, cell.steps, cell.eval_episodes, cell.eval_points
        )
        env = environment()
    finally:
        torch.set_num_threads(previous)
    if result.summary["status"] != "ok":
        raise RuntimeError(
            f"fingerprint run of {algo_name} on {env_id} ended with {result.summary['status']}: "
            f"{result.summary['reason']}"
        )
    return {
        "algo": algo_name,
        "env_id": env_id,
        "seed": cell.seed,
        "steps": cell.steps,
        "eval_episodes": cell.eval_episodes,
        "environment": env,
        "config": dataclasses.asdict(cell.algo),
        "metrics": [_plain({k: v for k, v in row.items() if not k.startswith("time/")}) for row in result.metrics],
        "evals": [_plain(row) for row in result.evals],
    }


def path_for(root: Path, algo_name: str, env_id: str) -> Path:
    """<root>/<env slug>/<algo>.json."""
    from rlbench.matrix import env_slug

    return Path(root) / env_slug(env_id) / f"{algo_name}.json"


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Python floats/ints; non-finite floats as None (JSON has no NaN)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, numbers.Integral):
            out[key] = int(value)
        elif isinstance(value, numbers.Real):
            out[key] = float(value) if math.isfinite(value) else None
        else:
            out[key] = value
    return out


def dumps(fingerprint: dict[str, Any]) -> str:
    """JSON text; floats are written with repr precision (round-trip exact)."""
    return json.dumps(fingerprint, indent=1, sort_keys=True, allow_nan=False) + "\n"


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def exact_mode(stored: dict[str, Any], fresh: dict[str, Any]) -> bool:
    """Whether the two were produced on the same platform, torch version and thread count."""
    a, b = stored.get("environment", {}), fresh.get("environment", {})
    return all(a.get(k) == b.get(k) for k in MATCH_KEYS)


def compare(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Human-readable differences between a stored and a fresh fingerprint; empty when they agree."""
    exact = exact_mode(stored, fresh)
    diffs: list[str] = []
    for key in ("algo", "env_id", "seed", "steps", "eval_episodes"):
        if stored.get(key) != fresh.get(key):
            diffs.append(f"{key}: stored {stored.get(key)!r}, fresh {fresh.get(key)!r}")
    old_cfg, new_cfg = stored.get("config", {}), fresh.get("config", {})
    for field in sorted(set(old_cfg) | set(new_cfg)):
        if old_cfg.get(field, "<absent>") != new_cfg.get(field, "<absent>"):
            diffs.append(
                f"config.{field}: stored {old_cfg.get(field, '<absent>')!r}, fresh {new_cfg.get(field, '<absent>')!r}"
            )
    for table in ("metrics", "evals"):
        diffs += _compare_rows(table, stored.get(table, []), fresh.get(table, []), exact)
    if len(diffs) > MAX_LINES:
        diffs = diffs[:MAX_LINES] + [f"... and {len(diffs) - MAX_LINES} more differences"]
    if diffs and not exact:
        a, b = stored.get("environment", {}), fresh.get("environment", {})
        env = ", ".join(f"{k} {a.get(k)!r}→{b.get(k)!r}" for k in MATCH_KEYS if a.get(k) != b.get(k))
        diffs.insert(0, f"(compared within rtol={RTOL:g}, atol={ATOL:g} because {env})")
    return diffs


def _compare_rows(table: str, old: list[dict], new: list[dict], exact: bool) -> list[str]:
    diffs = []
    if len(old) != len(new):
        diffs.append(f"{table}: stored {len(old)} rows, fresh {len(new)} rows")
    old_cols = set().union(*old) if old else set()
    new_cols = set().union(*new) if new else set()
    if old_cols - new_cols:
        diffs.append(f"{table}: columns missing from fresh: {sorted(old_cols - new_cols)}")
    if new_cols - old_cols:
        diffs.append(f"{table}: new columns in fresh: {sorted(new_cols - old_cols)}")
    for i, (a, b) in enumerate(zip(old, new)):
        label = f"{table} row {i} (update {a.get('update', '?')})"
        for col in sorted(set(a) & set(b)):
            if not _same(a[col], b[col], exact):
                diffs.append(f"{label} {col}: stored {a[col]!r}, fresh {b[col]!r}{_rel(a[col], b[col])}")
    return diffs


def _same(a: Any, b: Any, exact: bool) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return False
        return float(a) == float(b) if exact else math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    return a == b


def _rel(a: Any, b: Any) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        scale = max(abs(a), abs(b))
        if scale > 0:
            return f" (relative difference {abs(a - b) / scale:.2e})"
    return ""


def regenerate(path: Path = DEFAULT_DIR) -> list[str]:
    """Rewrite every (env, preset) fingerprint under `path`; return what changed ('env/algo: …' lines)."""
    from rlbench.algos import PRESETS

    changes: list[str] = []
    expected = set()
    for env_id in ENVS:
        for name in PRESETS:
            fresh = compute(name, env_id)
            file = path_for(path, name, env_id)
            expected.add(file)
            label = f"{env_id}/{name}"
            if file.is_file():
                try:
                    stored = load(file)
                except (OSError, ValueError) as err:
                    changes.append(f"{label}: replaced unreadable {file.name} ({err})")
                else:
                    diffs = compare(stored, fresh)
                    changes += [f"{label}: {d}" for d in diffs]
                    if not diffs and stored.get("environment") != fresh["environment"]:
                        changes.append(f"{label}: same numbers, environment now {fresh['environment']}")
            else:
                changes.append(f"{label}: new fingerprint {file}")
            text = dumps(fresh)
            if not file.is_file() or file.read_text() != text:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_name(f".{file.name}.tmp")
                tmp.write_text(text)
                tmp.replace(file)
    for file in sorted(Path(path).glob("**/*.json")):
        if file not in expected:
            changes.append(f"{file}: no such env/preset any more (left in place; delete it by hand)")
    return changes
