"""The run store: one directory per run; summary.json (written last, atomically) marks a finished run."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

CONFIG, METRICS, EVALS, SUMMARY, FAILURE = (
    "config.json",
    "metrics.parquet",
    "evals.parquet",
    "summary.json",
    "failure.json",
)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic(path: Path, write) -> None:
    """Write via a temp file in the same directory, flush it to disk, and os.replace it into place (then sync
    the directory), so a crash leaves either the old file or the complete new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _clean(value: Any) -> Any:
    """JSON cannot hold NaN/inf: store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(_clean(data), f, indent=2, sort_keys=True)
            f.write("\n")

    _atomic(path, write)


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    _atomic(path, lambda tmp: pd.DataFrame(rows).to_parquet(tmp, index=False))


def is_finished(run_dir: Path) -> bool:
    return (run_dir / SUMMARY).is_file()


def fresh_run_dir(run_dir: Path) -> None:
    """Empty an unfinished run directory (a previous attempt is redone from scratch) and create it."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


def provenance() -> dict[str, Any]:
    """Package versions, platform and git revision, recorded in every run's config.json."""
    versions = {}
    for name in ("rlbench", "torch", "numpy", "gymnasium", "pandas"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        revision = (
            subprocess.run(
                ["git", "describe", "--always", "--dirty", "--abbrev=40"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_revision": revision,
    }


def load_summaries(out: Path) -> pd.DataFrame:
    """One row per run directory under `out` that has a summary or a failure record."""
    rows = []
    for config_path in sorted(out.glob(f"**/{CONFIG}")):
        run_dir = config_path.parent
        config = read_json(config_path)
        row = {"env": config["env_id"], "algo": config["algo"]["name"], "seed": config["seed"], "run_dir": str(run_dir)}
        if (run_dir / SUMMARY).is_file():
            row.update(read_json(run_dir / SUMMARY))
        elif (run_dir / FAILURE).is_file():
            row.update(read_json(run_dir / FAILURE))
        else:
            row["status"] = "unfinished"
        rows.append(row)
    return pd.DataFrame(rows)


class SweepError(RuntimeError):
    """The sweep directory cannot be used: locked by another sweep, unwritable, or holding other configs."""


def lock_sweep(out: Path):
    """Create `out` and take an exclusive lock on it for this process's lifetime (released when it exits)."""
    import fcntl

    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / ".lock", "a+")
    except OSError as err:
        raise SweepError(f"cannot write to the sweep directory {out}: {err.strerror or err}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SweepError(f"another rlbench run is writing to {out}; wait for it or choose another --out") from None
    return handle


def conflicting_runs(cells: list[dict[str, Any]], run_dirs: list[Path]) -> list[Path]:
    """Run directories whose recorded config differs from the one this sweep would run there."""
    conflicts = []
    for cell, run_dir in zip(cells, run_dirs):
        path = run_dir / CONFIG
        if path.is_file():
            recorded = read_json(path)
            if {k: recorded.get(k) for k in cell} != _clean(cell):
                conflicts.append(run_dir)
    return conflicts
