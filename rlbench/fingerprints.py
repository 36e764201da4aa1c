"""Regression fingerprints: a short seeded run of every algorithm preset on each env of ENVS, stored and compared.

A fingerprint is the per-update metrics (without the wall-clock `time/*` columns) and evaluation rows of a
short seeded run of a preset on CartPole-v1 or TextGen (`ENVS`), run with one torch thread, plus the resolved
config and the environment it was produced in. `tests/regression/<env>/<algo>.json` holds one per (env,
preset); `tests/test_fingerprints.py` recomputes them and fails on any difference.

Comparison rule: the bits of a run are determined by the seed and config and by what executes the float
kernels — platform, torch version, thread count, the CPU (model and SIMD instruction sets) and the kernel path
torch dispatches to (`torch.backends.cpu.get_cpu_capability()`: DEFAULT, AVX2, AVX512, …). These are
`MATCH_KEYS`, recorded with every fingerprint.

- all `MATCH_KEYS` equal → floats must be **exactly** equal;
- otherwise → every float must agree within `RTOL` of its column's scale (the largest magnitude of that column
  in the stored fingerprint), since another CPU or kernel path legitimately changes the last bits and a few
  updates amplify them; `comparison()` says which rule applies and why.

Why `RTOL` = 3e-4 of the column scale (measured on an AMD EPYC, AVX2): the same fingerprints run on the AVX2 and
the DEFAULT kernel path (`ATEN_CPU_CAPABILITY=default`), and against fingerprints stored on another CPU, differ
by at most 8.8e-5 of a column's scale; a 0.1 % change to one loss coefficient moves some column by ≥ 1e-3 of its
scale on every preset tried. Relative to the column rather than to each value, because near-zero values (a
cosine of −0.005, a KL of 6e-5) carry the rounding of their column's larger terms.

Integers (update, env steps, episode counts), column sets, row counts and the config are always compared
exactly. The library reads and writes only the folder it is given: `rlbench fingerprints --update` (run from the
source checkout; `--dir` to choose another folder) regenerates `tests/regression` deliberately and prints what
changed.
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

from rlbench.spec import RunSpec, Status

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
RTOL = 3e-4
"""Tolerance for floats, relative to the column's scale, when some of MATCH_KEYS differ (see the module doc)."""
ATOL = 1e-12
"""Absolute floor of that tolerance, for columns that are all ~0 (e.g. KL to the reference at the first update)."""
MATCH_KEYS = ("platform", "torch", "threads", "cpu_model", "cpu_isa", "cpu_capability")
"""Environment fields that must all match for the comparison to be exact."""
SIMD_FLAG_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx")
"""/proc/cpuinfo flags that name vector instruction sets (what BLAS and ATen choose their kernels by)."""
MAX_LINES = 25
"""At most this many differences are listed per fingerprint; the rest are counted in one line."""


def spec_for(algo_name: str, env_id: str) -> RunSpec:
    """The run as fingerprinted: the matrix's resolution of the preset on env_id (group presets at G =
    GROUP_SIZE), seed SEED, the env's fingerprint budget, EVAL_EPISODES evaluation episodes."""
    from rlbench.matrix import resolve_spec

    spec = resolve_spec(algo_name, env_id, GROUP_SIZE, SEED, ENVS[env_id])
    return dataclasses.replace(spec, eval_episodes=EVAL_EPISODES)


def cpu_facts() -> dict[str, str]:
    """The CPU as the float kernels see it: model (with family/model/stepping) and its SIMD instruction sets."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return {"cpu_model": platform.processor() or "unknown", "cpu_isa": "unknown"}
    model = f"{info.get('model name', 'unknown')} (family {info.get('cpu family', '?')} model {info.get('model', '?')}"
    model += f" stepping {info.get('stepping', '?')})"
    simd = sorted(f for f in info.get("flags", "").split() if f.startswith(SIMD_FLAG_PREFIXES))
    return {"cpu_model": model, "cpu_isa": " ".join(simd) or "unknown"}


def environment() -> dict[str, Any]:
    """What exact reproducibility depends on (MATCH_KEYS) plus versions kept for information."""

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
        **cpu_facts(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy": version("numpy"),
        "gymnasium": version("gymnasium"),
    }


def compute(algo_name: str, env_id: str = "CartPole-v1") -> dict[str, Any]:
    """Run the preset's short seeded run on env_id with THREADS torch threads and return its fingerprint."""
    from rlbench.train import train

    cell = spec_for(algo_name, env_id)
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        result = train(cell)
        env = environment()
    finally:
        torch.set_num_threads(previous)
    if result.summary["status"] != Status.OK:
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
    from rlbench.spec import env_slug

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


def comparison(stored: dict[str, Any], fresh: dict[str, Any]) -> tuple[bool, str]:
    """(exact?, why): exact when every MATCH_KEYS field of the two environments is equal, else the fields that
    differ ('not recorded' for a fingerprint stored before the field existed)."""
    a, b = stored.get("environment", {}), fresh.get("environment", {})
    changed = [k for k in MATCH_KEYS if a.get(k) != b.get(k)]
    if not changed:
        return True, f"exact: same {', '.join(MATCH_KEYS)} ({b.get('cpu_capability')} kernels)"
    shown = ", ".join(f"{k} {a.get(k, 'not recorded')!r} → {b.get(k, 'not recorded')!r}" for k in changed)
    return False, f"within rtol {RTOL:g} of each column's scale, because {shown}"


def compare(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Human-readable differences between a stored and a fresh fingerprint under `comparison`'s rule; empty when
    they agree."""
    exact = comparison(stored, fresh)[0]
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
    scales = _column_scales(old)
    for i, (a, b) in enumerate(zip(old, new)):
        label = f"{table} row {i} (update {a.get('update', '?')})"
        for col in sorted(set(a) & set(b)):
            scale = scales.get(col, 0.0)
            if not _same(a[col], b[col], None if exact else RTOL * scale + ATOL):
                diffs.append(f"{label} {col}: stored {a[col]!r}, fresh {b[col]!r}{_rel(a[col], b[col], scale)}")
    return diffs


def _column_scales(rows: list[dict]) -> dict[str, float]:
    """Largest magnitude of each numeric column."""
    scales: dict[str, float] = {}
    for row in rows:
        for col, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scales[col] = max(scales.get(col, 0.0), abs(float(value)))
    return scales


def _same(a: Any, b: Any, tolerance: float | None) -> bool:
    """Equal, or for floats within `tolerance` absolute (None: exactly equal)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return False
        return float(a) == float(b) if tolerance is None else abs(a - b) <= tolerance
    return a == b


def _rel(a: Any, b: Any, scale: float | None) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and scale:
        return f" ({abs(a - b) / scale:.2e} of the column's scale)"
    return ""


def regenerate(path: Path) -> list[str]:
    """Rewrite every (env, preset) fingerprint under `path`; return what changed ('env/algo: …' lines)."""
    from rlbench.algos import NATIVE

    changes: list[str] = []
    expected = set()
    for env_id in ENVS:
        for name in NATIVE:
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
