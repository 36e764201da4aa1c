"""The Python API: `rlbench.run(...)` runs a matrix as `rlbench run` does (the CLI is a thin layer over this
module), `rlbench.load(path)` opens a sweep directory; `SweepResults` gives its runs, metrics, evaluations and
claims as pandas DataFrames. Bad input raises a ValueError subclass naming the bad value (MatrixError, SweepError,
ReportError, TensorBoardMissing) before anything is written."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from rlbench import store
from rlbench import tensorboard as tb
from rlbench.algos import AlgoConfig
from rlbench.executor import DEFAULT_SEED_BATCH, Executor, LocalBackend, RayBackend, check_contract_isolated
from rlbench.matrix import (
    DEFAULT_GROUP_SIZES,
    MatrixError,
    build_cells,
    check_batches,
    check_size,
    dispatch_order,
    get_budget_preset,
    import_env_modules,
    load_matrix_file,
    parse_list,
    parse_set,
    qualify,
    resolve_envs,
)
from rlbench.spec import DONE, RunSpec
from rlbench.store import Outcome

if TYPE_CHECKING:
    from rlbench.reports.data import Sweep as ReportSweep


@dataclass(frozen=True)
class Plan:
    """A validated matrix ready to run: its runs, the sweep directory and the executor that runs them."""

    cells: list[RunSpec]
    out: Path
    runner: Executor
    jobs: int


class Watcher(Protocol):
    """What follows a sweep while it runs (the CLI's progress display)."""

    def on_start(self, batch: list[RunSpec]) -> None: ...
    def on_done(self, outcome: Outcome) -> None: ...


def make_executor(
    name: str, jobs: int, time_limit: float | None, ray_address: str | None, seed_batch: int = 1
) -> Executor:
    """The executor asked for; MatrixError for an unknown name or a missing Ray install."""
    if name == "local":
        if ray_address is not None:
            raise MatrixError("--ray-address needs --executor ray")
        return Executor(LocalBackend(jobs), time_limit, seed_batch)
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise MatrixError("--executor ray needs Ray: pip install 'rlbench[ray]'") from None
        return Executor(RayBackend(ray_address), time_limit, seed_batch)
    raise MatrixError(f"unknown executor {name!r}; allowed: local, ray")


def _names(value: str | Sequence[str], what: str) -> list[str]:
    return parse_list(value, what) if isinstance(value, str) else list(value)


def _sets(value: Mapping[str, Any] | Sequence[str]) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return list(value.items())
    return [parse_set(item) for item in ([value] if isinstance(value, str) else value)]


def plan(
    algos: str | Sequence[str] | None = None,
    envs: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    preset: str | None = None,
    out: str | Path | None = None,
    sets: Mapping[str, Any] | Sequence[str] = (),
    jobs: int | None = None,
    executor: str = "local",
    group_sizes: Sequence[int] | None = None,
    kl_coefs: Sequence[float] | None = None,
    steps: int | None = None,
    matrix: str | Path | None = None,
    env_modules: Sequence[str] = (),
    env_kwargs: Mapping[str, Any] | None = None,
    ray_address: str | None = None,
    time_limit: float | None = None,
    seed_batch: int = DEFAULT_SEED_BATCH,
) -> Plan:
    """Validate the user's choices into a Plan (the arguments of `run`); MatrixError naming the first bad value.
    Nothing is written and no env is checked yet (`check_contract`)."""
    spec = load_matrix_file(Path(matrix)) if matrix is not None else {}
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if isinstance(seeds, int):
        if seeds <= 0:
            raise MatrixError(f"--seeds must be > 0, got {seeds}")
        check_size(seeds, "seeds")
    if jobs <= 0:
        raise MatrixError(f"--jobs must be > 0, got {jobs}")
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise MatrixError(f"--time-limit must be a finite number of seconds > 0, got {time_limit}")
    if seed_batch <= 0:
        raise MatrixError(f"--seed-batch must be > 0 (runs of one cell trained together), got {seed_batch}")
    runner = make_executor(executor, jobs, time_limit, ray_address, seed_batch)
    if isinstance(seeds, int):
        seed_values = list(range(seeds))
    elif seeds is not None:
        seed_values = list(seeds)
    elif "seed_list" in spec:
        seed_values = list(spec["seed_list"])
    else:
        seed_values = list(range(spec["seeds"])) if "seeds" in spec else None
    preset = preset or spec.get("preset", "quick")
    registered = import_env_modules(list(env_modules) or list(spec.get("env_modules", [])))
    kwargs = dict(env_kwargs or {})
    if envs is not None:
        env_requests = resolve_envs(_names(envs, "--envs"), kwargs)
    elif "envs" in spec:
        env_requests = [dataclasses.replace(r, kwargs={**r.kwargs, **kwargs}) for r in spec["envs"]]
    else:
        env_requests = resolve_envs(list(get_budget_preset(preset).envs), kwargs)
    cells = build_cells(
        algos=_names(algos, "--algos") if algos is not None else list(spec.get("algos", ["all"])),
        envs=qualify(env_requests, registered),
        preset_name=preset,
        seeds=seed_values,
        steps=steps if steps is not None else spec.get("steps"),
        group_sizes=list(group_sizes)
        if group_sizes is not None
        else list(spec.get("group_sizes", DEFAULT_GROUP_SIZES)),
        sets=spec.get("set", []) + _sets(sets),
        kl_coefs=list(kl_coefs) if kl_coefs is not None else spec.get("kl_coefs"),
    )
    check_batches(cells)
    out = Path(out) if out is not None else Path("runs") / f"{preset}-{store.plan_fingerprint(cells)}"
    return Plan(cells, out, runner, jobs)


def check_contract(cells: list[RunSpec]) -> None:
    """Each env of the matrix against rlbench's contract (seeded resets only where a grouped algorithm runs);
    MatrixError listing every failed check."""
    problems = []
    needs: dict[tuple[str, str], bool] = {}
    for cell in cells:
        key = (cell.env_id, json.dumps(cell.env_kwargs, sort_keys=True))
        needs[key] = needs.get(key, False) or cell.algo.grouped
    for (env_id, kwargs), seeded in needs.items():
        for check in check_contract_isolated(env_id, json.loads(kwargs), seeded_reset=seeded):
            if not check.ok:
                problems.append(f"  {env_id}: {check.name}: {check.detail}")
    if problems:
        raise MatrixError("environment contract failed:\n" + "\n".join(problems))


def execute(
    planned: Plan,
    force_new: bool = False,
    watch: Callable[[list[RunSpec]], AbstractContextManager[Watcher]] | None = None,
) -> list[Outcome]:
    """Make the plan the sweep directory's plan (runs of another config refused, or discarded with force_new)
    and run every unfinished run of it in dispatch order; SweepError if the directory cannot be used.
    `watch(order)` opens what follows the runs (called once the directory is locked and planned)."""
    with store.Sweep(planned.out) as sweep:
        sweep.plan(planned.cells, discard_conflicts=force_new)
        order = dispatch_order(planned.cells)
        with watch(order) if watch is not None else nullcontext() as watcher:
            try:
                if watcher is None:
                    return planned.runner.run(sweep, order, lambda outcome: None)
                return planned.runner.run(sweep, order, watcher.on_done, watcher.on_start)
            except OSError as err:
                raise store.SweepError(f"cannot write to {planned.out}: {err}; finished runs there are kept") from None


def write_tensorboard(cells: list[RunSpec], out: Path) -> int:
    """TensorBoard events for every run of the matrix that recorded metrics; returns how many runs have them."""
    written = 0
    for cell in cells:
        record = store.read_record(out, cell)
        if record.status in DONE:
            tb.write_events(record.run_dir, record.metrics(), record.evals())
            written += 1
    return written


def run(
    algos: str | Sequence[str] | None = None,
    envs: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    preset: str | None = None,
    out: str | Path | None = None,
    sets: Mapping[str, Any] | Sequence[str] = (),
    jobs: int | None = None,
    executor: str = "local",
    group_sizes: Sequence[int] | None = None,
    kl_coefs: Sequence[float] | None = None,
    steps: int | None = None,
    matrix: str | Path | None = None,
    env_modules: Sequence[str] = (),
    env_kwargs: Mapping[str, Any] | None = None,
    ray_address: str | None = None,
    time_limit: float | None = None,
    seed_batch: int = DEFAULT_SEED_BATCH,
    force_new: bool = False,
    tensorboard: bool = False,
    report: bool = True,
) -> SweepResults:
    """Run a matrix of algorithms × envs × seeds like `rlbench run` (finished runs in `out` are skipped: a resume)
    and return the sweep. `seeds` is a count (seeds 0..N-1) or the seeds themselves; `sets` maps `[ALGO.]FIELD`
    to a value (or lists `"[ALGO.]FIELD=VALUE"` strings); `jobs` defaults to the CPU count; `matrix` is a TOML
    matrix file the other arguments override; `force_new` discards runs in `out` made with another config;
    `tensorboard` writes each run's events; `report` renders `out/report/`. Bad input raises a ValueError
    subclass before anything is written; failed runs do not raise: they are rows of `runs()` with status
    `failed`."""
    if tensorboard:
        tb.require()
    planned = plan(
        algos,
        envs,
        seeds,
        preset,
        out,
        sets,
        jobs,
        executor,
        group_sizes,
        kl_coefs,
        steps,
        matrix,
        env_modules,
        env_kwargs,
        ray_address,
        time_limit,
        seed_batch,
    )
    check_contract(planned.cells)
    execute(planned, force_new)
    if tensorboard:
        write_tensorboard(planned.cells, planned.out)
    results = SweepResults(planned.out)
    if report:
        results.report()
    return results


def load(path: str | Path) -> SweepResults:
    """Open a finished or partial sweep directory; ReportError if it does not exist or holds no plan."""
    results = SweepResults(Path(path))
    results.data()
    return results


@dataclass(frozen=True)
class SweepResults:
    """A sweep directory read as DataFrames (read afresh at each call, so a running sweep shows its progress)."""

    out: Path

    def data(self) -> ReportSweep:
        """The sweep as the report reads it (rlbench.reports.data.load_sweep); ReportError without a plan."""
        from rlbench.reports.data import load_sweep

        return load_sweep(self.out)

    def runs(self) -> pd.DataFrame:
        """One row per planned run, in report order: env, algo (the matrix column), seed, run_dir, status, reason,
        summary.json's fields (finished runs), steps, and every field of the column's resolved AlgoConfig."""
        sweep = self.data()
        runs = sweep.runs
        fields = [f.name for f in dataclasses.fields(AlgoConfig) if f.name != "name" and f.name not in runs]
        for field in fields:
            runs[field] = [sweep.configs[env, algo][field] for env, algo in zip(runs["env"], runs["algo"])]
        return runs

    def metrics(self) -> pd.DataFrame:
        """Per update of every finished run: env, algo, seed, then metrics.parquet's columns."""
        return self.data().metrics

    def evals(self) -> pd.DataFrame:
        """Per evaluation of every finished run: env, algo, seed, then evals.parquet's columns."""
        return self.data().evals

    def claims(self, seed: int = 0) -> pd.DataFrame:
        """The claims table the report computes (tables/claims.csv): one row per (test, env) and per test combined,
        with effect, interval and verdict; `seed` seeds the bootstrap as the report's does."""
        from rlbench.reports import claims, tables

        sweep = self.data()
        return claims.evaluate(tables.per_run(sweep), sweep.configs, seed)

    def report(self) -> Path:
        """Render `out/report/` (report.md, report.html, figures/, tables/) and return that directory."""
        from rlbench.reports.render import render_report

        return render_report(self.out)
