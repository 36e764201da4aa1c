"""Executing a plan: one scheduling loop (`Executor`) over a backend that runs one seed batch per slot (up to
`seed_batch` runs of one matrix cell that differ only in their seed, trained together: rlbench.train.train_batch),
in a local worker process (`LocalBackend`) or as a Ray task (`RayBackend`). Workers only train and send the
results back; the driver writes every file of every run through rlbench.store.Sweep, so a worker never needs the
sweep directory."""

from __future__ import annotations

import multiprocessing as mp
import re
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from rlbench.contract import Check
from rlbench.spec import RunSpec, Status, seed_batches
from rlbench.store import Outcome, Sweep


def train_in_worker(batch: list[dict[str, Any]]) -> list[Any]:
    """Train a seed batch with one torch thread, by rlbench's loop (together) or the library its trainer names
    (Stable-Baselines3, one run after another: rlbench.sb3_runner); returns each run's rlbench.train.RunResult or
    rlbench.train.Crash, in order (raises only when the batch as a whole cannot be trained)."""
    import torch

    from rlbench.train import Crash, train_batch

    specs = [RunSpec.from_dict(data) for data in batch]
    torch.set_num_threads(1)
    if specs[0].algo.trainer == "rlbench":
        return train_batch(specs)
    from rlbench.sb3_runner import train_sb3

    results: list[Any] = []
    for spec in specs:
        try:
            results.append(train_sb3(spec))
        except Exception as err:
            results.append(Crash(f"{type(err).__name__}: {err}", traceback.format_exc()))
    return results


DEFAULT_SEED_BATCH = 5
"""Runs of one cell a worker trains together unless told otherwise (`--seed-batch`)."""


@dataclass(frozen=True)
class Ended:
    """What a backend reports for one seed batch: its results, or why it has none (the same for every backend)."""

    result: Any = None
    """Each run's rlbench.train.RunResult or rlbench.train.Crash, or None when the whole batch failed."""
    reason: str = ""
    traceback: str | None = None
    exit_code: int | None = None


class Backend(Protocol):
    """Runs specs somewhere; handles identify submitted runs."""

    def open(self) -> None: ...
    def slots(self) -> int: ...
    def submit(self, batch: list[RunSpec]) -> Any: ...
    def ready(self, handles: list[Any], timeout: float) -> list[Any]: ...
    def has_result(self, handle: Any) -> bool: ...
    def collect(self, handle: Any) -> Ended: ...
    def cancel(self, handle: Any) -> None: ...
    def close(self) -> None: ...


class Executor:
    """The one scheduling loop: skip runs finished earlier, group the others into seed batches, keep the backend's
    slots busy, record each run's outcome through the sweep as its batch ends, and kill a batch over its time
    limit (the per-run limit times its runs, counted from submission): its runs fail, and a resume retries them."""

    def __init__(self, backend: Backend, time_limit: float | None = None, seed_batch: int = 1) -> None:
        self.backend = backend
        self.time_limit = time_limit
        self.seed_batch = seed_batch

    def run(
        self,
        sweep: Sweep,
        specs: list[RunSpec],
        on_done: Callable[[Outcome], None],
        on_start: Callable[[list[RunSpec]], None] | None = None,
    ) -> list[Outcome]:
        """Run every unfinished spec; on_start(batch) when a seed batch is submitted, on_done(outcome) when a run
        ends."""
        outcomes: list[Outcome] = []

        def finish(outcome: Outcome) -> None:
            outcomes.append(outcome)
            on_done(outcome)

        pending: deque[RunSpec] = deque()
        for spec in specs:
            if sweep.finished(spec):
                finish(Outcome(spec, spec.run_dir(sweep.out), Status.SKIPPED))
            else:
                pending.append(spec)
        if not pending:
            return outcomes
        backend = self.backend
        backend.open()
        running: dict[Any, tuple[list[RunSpec], float]] = {}
        waiting = deque(seed_batches(list(pending), self.seed_batch, lambda spec: spec.cell))
        try:
            while waiting or running:
                while waiting and len(running) < backend.slots():
                    batch = waiting.popleft()
                    for spec in batch:
                        sweep.start(spec)
                    running[backend.submit(batch)] = (batch, time.monotonic())
                    if on_start is not None:
                        on_start(batch)
                for handle in backend.ready(list(running), 0.5):
                    batch, _ = running.pop(handle)
                    for outcome in record(sweep, batch, backend.collect(handle)):
                        finish(outcome)
                for handle, (batch, started) in list(running.items()):
                    limit = None if self.time_limit is None else self.time_limit * len(batch)
                    late = limit is not None and time.monotonic() - started > limit
                    if late and not backend.has_result(handle):  # a result that arrived meanwhile is kept
                        backend.cancel(handle)
                        del running[handle]
                        for spec in batch:
                            finish(sweep.record_failure(spec, timeout_reason(self.time_limit, len(batch))))
        finally:
            for handle in running:
                backend.cancel(handle)
            backend.close()
        return outcomes


def record(sweep: Sweep, batch: list[RunSpec], ended: Ended) -> list[Outcome]:
    """Write what a backend reported for a seed batch: each run's result files, or failure.json (every run of a
    batch that failed as a whole, or the run that crashed)."""
    from rlbench.train import Crash

    if ended.result is None:
        return [sweep.record_failure(spec, ended.reason, ended.traceback, ended.exit_code) for spec in batch]
    outcomes = []
    for spec, result in zip(batch, ended.result, strict=True):
        if isinstance(result, Crash):
            outcomes.append(sweep.record_failure(spec, result.reason, result.traceback))
        else:
            outcomes.append(sweep.record_result(spec, result.metrics, result.evals, result.summary))
    return outcomes


def timeout_reason(limit: float, runs: int = 1) -> str:
    if runs == 1:
        return f"timeout: exceeded the per-run limit of {limit:g} s"
    return f"timeout: its seed batch of {runs} runs exceeded {runs} × the per-run limit of {limit:g} s"


def worker_context() -> mp.context.BaseContext:
    """The forkserver context every worker comes from; the server preloads torch and the training code once."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["rlbench.executor", "rlbench.train"])
    return context


MAKE_TIMEOUT = 900.0
"""Seconds an env may take to be constructed before its checks start: one-time work such as training TextGen's
reference and reward models on a cold cache (about 25 s on this project's 2-core machine, up to 4.5× that on
others of its kind) is not a hang."""


def _contract_child(conn, env_id: str, env_kwargs: dict[str, Any], seeded_reset: bool) -> None:
    from rlbench.contract import check_made, make_for_check

    env = make_for_check(env_id, env_kwargs)
    conn.send("constructed")
    conn.send(env if isinstance(env, list) else check_made(env, env_id, seeded_reset))
    conn.close()


def check_contract_isolated(
    env_id: str, env_kwargs: dict[str, Any], seeded_reset: bool, timeout: float = 30.0
) -> list[Check]:
    """rlbench.contract.check_contract in a worker process: an env that crashes or hangs fails the check
    instead of taking the command down with it. The env may take MAKE_TIMEOUT seconds to be constructed the
    first time (caches), then `timeout` seconds for the checks."""
    context = worker_context()
    receiver, sender = context.Pipe(duplex=False)
    proc = context.Process(target=_contract_child, args=(sender, env_id, env_kwargs, seeded_reset))
    proc.start()
    sender.close()
    try:
        for limit, what in ((MAKE_TIMEOUT, "was not constructed"), (timeout, "did not finish the checks")):
            if not receiver.poll(limit):
                return [Check("contract check", False, f"the env {what} within {limit:g} s")]
            try:
                message = receiver.recv()
            except EOFError:
                proc.join()
                crashed = f"the env crashed the checking process (exit code {proc.exitcode})"
                return [Check("contract check", False, crashed)]
        return message
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()


def _local_worker(conn: Connection, batch: list[dict[str, Any]]) -> None:
    """Local worker entry point: train a seed batch and send ("result", results) or ("error", reason, traceback)."""
    try:
        message = ("result", train_in_worker(batch))
    except Exception as err:
        message = ("error", f"{type(err).__name__}: {err}", traceback.format_exc())
    conn.send(message)
    conn.close()


class LocalBackend:
    """Up to `jobs` worker processes on this machine, one per seed batch; results come back through a pipe."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.procs: dict[Connection, Any] = {}

    def open(self) -> None:
        self.context = worker_context()

    def slots(self) -> int:
        return self.jobs

    def submit(self, batch: list[RunSpec]) -> Connection:
        receiver, sender = self.context.Pipe(duplex=False)
        proc = self.context.Process(target=_local_worker, args=(sender, [spec.to_dict() for spec in batch]))
        proc.start()
        sender.close()
        self.procs[receiver] = proc
        return receiver

    def ready(self, handles: list[Connection], timeout: float) -> list[Connection]:
        """Runs that sent their result or whose process ended (a process that died sends nothing)."""
        by_sentinel = {self.procs[h].sentinel: h for h in handles}
        woke = wait([*handles, *by_sentinel], timeout=timeout)
        return list(dict.fromkeys(by_sentinel.get(w, w) for w in woke))

    def has_result(self, handle: Connection) -> bool:
        return handle.poll()

    def collect(self, handle: Connection) -> Ended:
        proc = self.procs.pop(handle)
        try:
            message = handle.recv() if handle.poll() else None
        except EOFError:
            message = None
        handle.close()
        proc.join()
        if message is None:
            return Ended(reason=_exit_reason(proc.exitcode), exit_code=proc.exitcode)
        if message[0] == "result":
            return Ended(result=message[1])
        return Ended(reason=message[1], traceback=message[2])

    def cancel(self, handle: Connection) -> None:
        proc = self.procs.pop(handle)
        proc.kill()
        proc.join()
        handle.close()

    def close(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.join()
        self.procs.clear()


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"worker killed by signal {-exitcode}"
    return f"worker exited with code {exitcode}"


class RayBackend:
    """Ray tasks (one CPU each) on a local or remote Ray cluster.

    Only the specs (plain data) travel to a worker and only the results travel back, so worker machines need
    rlbench installed but no shared filesystem. As many tasks are in flight as the cluster has CPUs now (fewer
    after a node leaves). A task that raises fails its run with the remote traceback; a task whose worker or
    node dies fails its run with Ray's error as the reason.
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def open(self) -> None:
        import ray

        self.ray = ray
        ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.remote = ray.remote(num_cpus=1, max_retries=0)(train_in_worker)

    def slots(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def submit(self, batch: list[RunSpec]) -> Any:
        return self.remote.remote([spec.to_dict() for spec in batch])

    def ready(self, handles: list[Any], timeout: float) -> list[Any]:
        return self.ray.wait(handles, num_returns=1, timeout=timeout)[0]

    def has_result(self, handle: Any) -> bool:
        return bool(self.ray.wait([handle], timeout=0)[0])

    def collect(self, handle: Any) -> Ended:
        ray = self.ray
        try:
            return Ended(result=ray.get(handle))
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if err.cause is not None else err
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # Ray colours its remote traceback
            return Ended(reason=f"{type(cause).__name__}: {cause}", traceback=plain)
        except ray.exceptions.RayError as err:
            return Ended(reason=f"worker died: {type(err).__name__}: {err}")

    def cancel(self, handle: Any) -> None:
        self.ray.cancel(handle, force=True)

    def close(self) -> None:
        self.ray.shutdown()
