"""Executing cells: each run in its own worker process (one torch thread), failures isolated per run."""

from __future__ import annotations

import multiprocessing as mp
import re
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from rlbench import store
from rlbench.contract import Check
from rlbench.matrix import Cell


@dataclass
class Outcome:
    """How one run ended: ok, diverged or env_nan (finished), failed, or skipped (finished earlier)."""

    cell: Cell
    run_dir: Path
    status: str
    reason: str = ""


def train_cell(cell_data: dict[str, Any]) -> Any:
    """Train one cell with one torch thread; returns rlbench.train.RunResult (raises on a crash)."""
    import torch

    from rlbench.train import train

    torch.set_num_threads(1)
    cell = Cell.from_dict(cell_data)
    return train(cell.algo, cell.env_id, cell.env_kwargs, cell.seed, cell.steps, cell.eval_episodes, cell.eval_points)


def store_result(run_dir: Path, result: Any) -> None:
    """Write a finished run: metrics and evals first, summary.json (the marker of a finished run) last."""
    store.write_parquet(run_dir / store.METRICS, result.metrics)
    store.write_parquet(run_dir / store.EVALS, result.evals)
    store.write_json(run_dir / store.SUMMARY, result.summary)


def store_failure(run_dir: Path, reason: str, **details: Any) -> Outcome:
    """Record a failed run (failure.json, atomically); failed runs are retried when the sweep resumes."""
    store.write_json(run_dir / store.FAILURE, {"status": "failed", "reason": reason, **details})
    return Outcome(Cell.from_dict(store.read_json(run_dir / store.CONFIG)), run_dir, "failed", reason)


def finished_outcome(cell: Cell, run_dir: Path) -> Outcome | None:
    """The outcome a run directory records (summary or failure), or None when it holds neither."""
    if store.is_finished(run_dir):
        summary = store.read_json(run_dir / store.SUMMARY)
        return Outcome(cell, run_dir, summary["status"], summary.get("reason", ""))
    if (run_dir / store.FAILURE).is_file():
        return Outcome(cell, run_dir, "failed", store.read_json(run_dir / store.FAILURE)["reason"])
    return None


def prepare_run(cell: Cell, out: Path, meta: dict[str, Any]) -> Path:
    """An empty run directory holding config.json (an unfinished earlier attempt is discarded)."""
    run_dir = cell.run_dir(out)
    store.fresh_run_dir(run_dir)
    store.write_json(run_dir / store.CONFIG, run_config(cell, meta))
    return run_dir


@dataclass
class Tally:
    """The outcomes of one sweep so far: `finish` records an outcome and reports it to the caller; `start`
    reports a run that began."""

    on_done: Callable[[Outcome], None]
    on_start: Callable[[Cell], None] | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def start(self, cell: Cell) -> None:
        if self.on_start is not None:
            self.on_start(cell)

    def finish(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.on_done(outcome)


def split_finished(cells: list[Cell], out: Path, finish: Callable[[Outcome], None]) -> deque[Cell]:
    """Report cells finished in an earlier sweep as skipped; return the rest, in order."""
    pending: deque[Cell] = deque()
    for cell in cells:
        if store.is_finished(cell.run_dir(out)):
            finish(Outcome(cell, cell.run_dir(out), "skipped"))
        else:
            pending.append(cell)
    return pending


def execute_cell(cell_data: dict[str, Any], run_dir: str) -> None:
    """Local worker entry point: train one cell and store it; any exception is recorded as failure.json."""
    try:
        store_result(Path(run_dir), train_cell(cell_data))
    except Exception as err:
        store_failure(Path(run_dir), f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        raise SystemExit(1) from None


def run_config(cell: Cell, meta: dict[str, Any]) -> dict[str, Any]:
    """config.json: the resolved cell plus provenance and the thread count the worker uses."""
    return {**cell.to_dict(), **meta, "torch_threads": 1}


def worker_context() -> mp.context.BaseContext:
    """The forkserver context every worker comes from; the server preloads torch and the training code once."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["rlbench.executor", "rlbench.train"])
    return context


def _contract_child(conn, env_id: str, env_kwargs: dict[str, Any], seeded_reset: bool) -> None:
    from rlbench.contract import check_contract

    conn.send(check_contract(env_id, env_kwargs, seeded_reset))
    conn.close()


def check_contract_isolated(
    env_id: str, env_kwargs: dict[str, Any], seeded_reset: bool, timeout: float = 30.0
) -> list[Check]:
    """rlbench.contract.check_contract in a worker process: an env that crashes or hangs fails the check
    instead of taking the command down with it."""
    context = worker_context()
    receiver, sender = context.Pipe(duplex=False)
    proc = context.Process(target=_contract_child, args=(sender, env_id, env_kwargs, seeded_reset))
    proc.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            return [Check("contract check", False, f"the env did not finish the checks within {timeout:g} s")]
        try:
            return receiver.recv()
        except EOFError:
            proc.join()
            return [Check("contract check", False, f"the env crashed the checking process (exit code {proc.exitcode})")]
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()


class LocalExecutor:
    """Runs cells in up to `jobs` worker processes; a per-run time limit kills runs that hang."""

    def __init__(self, jobs: int, time_limit: float | None = None) -> None:
        self.jobs = jobs
        self.time_limit = time_limit
        self.context = worker_context()

    def run(
        self,
        cells: list[Cell],
        out: Path,
        on_done: Callable[[Outcome], None],
        on_start: Callable[[Cell], None] | None = None,
    ) -> list[Outcome]:
        """Run every unfinished cell; on_start(cell) when a run begins, on_done(outcome) when one ends."""
        meta, tally = store.provenance(), Tally(on_done, on_start)
        finish, pending = tally.finish, split_finished(cells, out, tally.finish)
        running: dict[int, tuple[Any, Cell, float]] = {}
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    cell = pending.popleft()
                    run_dir = prepare_run(cell, out, meta)
                    proc = self.context.Process(target=execute_cell, args=(cell.to_dict(), str(run_dir)))
                    proc.start()
                    tally.start(cell)
                    running[proc.sentinel] = (proc, cell, time.monotonic())
                for sentinel in wait(list(running), timeout=0.5):
                    proc, cell, _ = running.pop(sentinel)
                    proc.join()
                    run_dir = cell.run_dir(out)
                    finish(
                        finished_outcome(cell, run_dir)
                        or store_failure(run_dir, _exit_reason(proc.exitcode), exit_code=proc.exitcode)
                    )
                for sentinel, (proc, cell, started) in list(running.items()):
                    if self.time_limit is not None and time.monotonic() - started > self.time_limit:
                        proc.kill()
                        proc.join()
                        del running[sentinel]
                        run_dir = cell.run_dir(out)  # it may have finished just before the kill
                        finish(
                            finished_outcome(cell, run_dir) or store_failure(run_dir, timeout_reason(self.time_limit))
                        )
        finally:
            for proc, _, _ in running.values():
                proc.terminate()
            for proc, _, _ in running.values():
                proc.join()
        return tally.outcomes


def timeout_reason(limit: float) -> str:
    return f"timeout: exceeded the per-run limit of {limit:g} s"


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"worker killed by signal {-exitcode}"
    return f"worker exited with code {exitcode}"


class RayExecutor:
    """Runs cells as Ray tasks (one CPU each) on a local or remote Ray cluster.

    Results travel back to this process, which writes the run store, so worker machines need no shared
    filesystem. At most as many tasks as the cluster has CPUs are in flight, so the per-run time limit counts
    from a run's start. A task that raises, or whose worker dies, fails only its own run.
    """

    def __init__(self, address: str | None = None, time_limit: float | None = None) -> None:
        self.address = address
        self.time_limit = time_limit

    def run(
        self,
        cells: list[Cell],
        out: Path,
        on_done: Callable[[Outcome], None],
        on_start: Callable[[Cell], None] | None = None,
    ) -> list[Outcome]:
        """Run every unfinished cell; on_start(cell) when a task is submitted, on_done(outcome) when one ends."""
        import ray

        meta, tally = store.provenance(), Tally(on_done, on_start)
        finish, pending = tally.finish, split_finished(cells, out, tally.finish)
        if not pending:
            return tally.outcomes
        ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        remote = ray.remote(num_cpus=1, max_retries=0)(train_cell)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        running: dict[Any, tuple[Cell, float]] = {}
        try:
            while pending or running:
                while pending and len(running) < slots:
                    cell = pending.popleft()
                    prepare_run(cell, out, meta)
                    running[remote.remote(cell.to_dict())] = (cell, time.monotonic())
                    tally.start(cell)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    cell, _ = running.pop(ref)
                    finish(self._collect(ray, ref, cell, cell.run_dir(out)))
                for ref, (cell, started) in list(running.items()):
                    late = self.time_limit is not None and time.monotonic() - started > self.time_limit
                    if late and not ray.wait([ref], timeout=0)[0]:  # a result that arrived meanwhile is kept
                        ray.cancel(ref, force=True)
                        del running[ref]
                        finish(store_failure(cell.run_dir(out), timeout_reason(self.time_limit)))
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            ray.shutdown()
        return tally.outcomes

    @staticmethod
    def _collect(ray: Any, ref: Any, cell: Cell, run_dir: Path) -> Outcome:
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if err.cause is not None else err
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # Ray colours its remote traceback
            return store_failure(run_dir, f"{type(cause).__name__}: {cause}", traceback=plain)
        except ray.exceptions.RayError as err:
            return store_failure(run_dir, f"worker died: {type(err).__name__}: {err}")
        store_result(run_dir, result)
        return finished_outcome(cell, run_dir)
