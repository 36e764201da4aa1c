"""The run store: a sweep directory holds its plan (sweep.json) and one directory per run; summary.json (written
last, atomically) marks a finished run, failure.json a failed one. This module is the only reader and writer of
those files: `Sweep` holds a directory for one driver (lock, plan, resume, outcomes), `read_sweep` reads it back
as one RunRecord per planned run."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from rlbench import registry
from rlbench.algos.config import AlgoConfig
from rlbench.spec import DONE, RunSpec, Status

CONFIG, METRICS, EVALS, SUMMARY, FAILURE, PLAN, LOCK = (
    "config.json",
    "metrics.parquet",
    "evals.parquet",
    "summary.json",
    "failure.json",
    "sweep.json",
    ".lock",
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


def provenance() -> dict[str, Any]:
    """Package versions (stable-baselines3: None unless installed), platform and git revision, recorded in every
    run's config.json."""
    versions = {}
    for name in ("rlbench", "torch", "numpy", "gymnasium", "pandas", "stable-baselines3"):
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


class SweepError(ValueError):
    """The sweep directory cannot be used: locked by another sweep, unwritable, holding runs of another config,
    or not a sweep directory at all."""


@dataclass(frozen=True)
class Outcome:
    """How one run of this sweep ended (a DONE status, FAILED) or that it had finished before (SKIPPED)."""

    spec: RunSpec
    run_dir: Path
    status: Status
    reason: str = ""

    def record(self) -> RunRecord:
        """The run as the store holds it now (its summary and frames read from its files)."""
        return RunRecord(self.spec, Path(self.run_dir), self.status, self.reason)


def resolve_status(run_dir: Path) -> tuple[Status, str]:
    """The one rule for a run's status and reason: summary.json's status, else FAILED with failure.json's
    reason, else UNFINISHED when config.json exists (started, never ended), else MISSING (never started)."""
    if (run_dir / SUMMARY).is_file():
        summary = read_json(run_dir / SUMMARY)
        return Status(summary["status"]), summary.get("reason") or ""
    if (run_dir / FAILURE).is_file():
        return Status.FAILED, read_json(run_dir / FAILURE)["reason"]
    if (run_dir / CONFIG).is_file():
        return Status.UNFINISHED, "started but never finished (its sweep was stopped before the run ended)"
    return Status.MISSING, "never started (its sweep was stopped before the run began)"


@dataclass(frozen=True)
class RunRecord:
    """One planned run as the store holds it: its spec, status and reason, and its files' contents."""

    spec: RunSpec
    run_dir: Path
    status: Status
    reason: str

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json (empty unless the run finished training)."""
        return read_json(self.run_dir / SUMMARY) if self.status in DONE else {}

    def metrics(self) -> pd.DataFrame:
        """metrics.parquet, one row per update (empty unless the run finished training)."""
        return self._frame(METRICS)

    def evals(self) -> pd.DataFrame:
        """evals.parquet, one row per evaluation (empty unless the run finished training)."""
        return self._frame(EVALS)

    def _frame(self, name: str) -> pd.DataFrame:
        path = self.run_dir / name
        return pd.read_parquet(path) if self.status in DONE and path.is_file() else pd.DataFrame()


def read_record(out: Path, spec: RunSpec) -> RunRecord:
    run_dir = spec.run_dir(out)
    return RunRecord(spec, run_dir, *resolve_status(run_dir))


def plan_fingerprint(specs: list[RunSpec]) -> str:
    """Short hash of a plan: the same resolved matrix gives the same fingerprint (and default directory)."""
    blob = json.dumps([s.to_dict() for s in specs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def stored_spec(data: dict[str, Any]) -> RunSpec:
    """The RunSpec a stored dict (a sweep.json cell or a config.json) describes. A dict written before `n_starts`
    split from `n_envs` (rlbench 0.1 up to commit 58ca4f1) is read as it ran: its n_envs counted start states in
    `episodes` mode and prompts on TextGen, which n_starts counts now."""
    algo = data["algo"]
    if "n_starts" not in algo:
        counted_starts = algo.get("collect") == "episodes" or registry.is_text(data["env_id"])
        default = AlgoConfig.__dataclass_fields__["n_envs"].default
        n_envs, n_starts = (default, algo["n_envs"]) if counted_starts else (algo["n_envs"], default)
        data = {**data, "algo": {**algo, "n_envs": n_envs, "n_starts": n_starts}}
    return RunSpec.from_dict(data)


def read_plan(out: Path) -> list[RunSpec]:
    """The runs sweep.json plans, in plan order; SweepError when `out` holds no plan."""
    path = Path(out) / PLAN
    if not path.is_file():
        raise SweepError(f"no runs under {out}: it has no {PLAN} (make a sweep with rlbench run)")
    return [stored_spec(cell) for cell in read_json(path)["cells"]]


def read_sweep(out: Path) -> tuple[list[RunRecord], list[Path]]:
    """(one record per planned run, in plan order; run directories under `out` that the plan does not hold)."""
    records = [read_record(out, spec) for spec in read_plan(out)]
    planned = {r.run_dir for r in records}
    strays = sorted(p.parent for p in Path(out).glob(f"**/{CONFIG}") if p.parent not in planned)
    return records, strays


def summary_rows(records: list[RunRecord]) -> pd.DataFrame:
    """One row per record: env, algo, seed, run_dir, status, reason, then summary.json's fields (if finished)."""
    rows = [
        {
            **r.summary,
            "env": r.spec.env_id,
            "algo": r.spec.algo.name,
            "seed": r.spec.seed,
            "run_dir": str(r.run_dir),
            "status": r.status.value,
            "reason": r.reason,
        }
        for r in records
    ]
    return pd.DataFrame(rows)


class Sweep:
    """A sweep directory held by one driver: created and locked on open (released on close or when the process
    exits), planned, and written run by run. Workers never touch it: every file of a run is written here."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.out / LOCK, "a+")
        except OSError as err:
            raise SweepError(f"cannot write to the sweep directory {out}: {err.strerror or err}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SweepError(f"another rlbench run is writing to {out}; wait for it or choose another --out") from None
        self._provenance: dict[str, Any] | None = None

    def close(self) -> None:
        self._lock.close()

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def conflicts(self, specs: list[RunSpec]) -> list[Path]:
        """Run directories whose recorded config differs from the spec this plan would run there."""
        found = []
        for spec in specs:
            path = spec.run_dir(self.out) / CONFIG
            if path.is_file() and _clean(stored_spec(read_json(path)).to_dict()) != _clean(spec.to_dict()):
                found.append(path.parent)
        return found

    def plan(self, specs: list[RunSpec], discard_conflicts: bool = False) -> None:
        """Make `specs` this directory's plan (sweep.json). Runs recorded with another config are a SweepError
        naming them, or are deleted with `discard_conflicts`."""
        conflicts = self.conflicts(specs)
        if conflicts and not discard_conflicts:
            shown = "\n  ".join(map(str, conflicts[:5])) + ("\n  …" if len(conflicts) > 5 else "")
            raise SweepError(
                f"{len(conflicts)} run(s) in {self.out} were made with a different config:\n  {shown}\n"
                "use a new --out, or --force-new to discard them and start again"
            )
        for run_dir in conflicts:
            shutil.rmtree(run_dir)
        write_json(self.out / PLAN, {"fingerprint": plan_fingerprint(specs), "cells": [s.to_dict() for s in specs]})

    def finished(self, spec: RunSpec) -> bool:
        """Whether the run finished training in an earlier sweep (it is skipped; a failed one is redone)."""
        return (spec.run_dir(self.out) / SUMMARY).is_file()

    def start(self, spec: RunSpec) -> None:
        """An empty run directory holding config.json: the spec, provenance and the worker's thread count (an
        unfinished earlier attempt is discarded)."""
        if self._provenance is None:
            self._provenance = provenance()
        run_dir = spec.run_dir(self.out)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_json(run_dir / CONFIG, {**spec.to_dict(), **self._provenance, "torch_threads": 1})

    def record_result(self, spec: RunSpec, metrics: list[dict], evals: list[dict], summary: dict) -> Outcome:
        """Write a run that finished training: metrics and evals first, summary.json (the marker) last."""
        run_dir = spec.run_dir(self.out)
        write_parquet(run_dir / METRICS, metrics)
        write_parquet(run_dir / EVALS, evals)
        write_json(run_dir / SUMMARY, summary)
        return Outcome(spec, run_dir, *resolve_status(run_dir))

    def record_failure(
        self, spec: RunSpec, reason: str, traceback: str | None = None, exit_code: int | None = None
    ) -> Outcome:
        """Write failure.json (the same fields whatever ran the run); a failed run is redone on resume."""
        run_dir = spec.run_dir(self.out)
        record = {"status": Status.FAILED, "reason": reason, "traceback": traceback, "exit_code": exit_code}
        write_json(run_dir / FAILURE, record)
        return Outcome(spec, run_dir, *resolve_status(run_dir))
