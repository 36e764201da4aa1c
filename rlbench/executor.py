"""Executing a plan: one scheduling loop (`Executor`) over a backend that runs one spec per slot, in a local worker
process (`LocalBackend`) or as a Ray task (`RayBackend`). Workers only train and send the result back; the driver
writes every file of every run through rlbench.store.Sweep, so a worker never needs the sweep directory."""

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
from rlbench.spec import RunSpec, Status
from rlbench.store import Outcome, Sweep


def train_in_worker(spec_data: dict[str, Any]) -> Any:
    """Train one spec with one torch thread, by rlbench's loop or the library its trainer names (Stable-Baselines3:
    rlbench.sb3_runner); returns rlbench.train.RunResult (raises on a crash)."""
    import torch

    spec = RunSpec.from_dict(spec_data)
    torch.set_num_threads(1)
    if spec.algo.trainer == "rlbench":
        from rlbench.train import train

        return train(spec)
    from rlbench.sb3_runner import train_sb3

    return train_sb3(spec)


@dataclass(frozen=True)
class Ended:
    """What a backend reports for one run: its result, or why it has none (the same fields for every backend)."""

    result: Any = None
    """rlbench.train.RunResult, or None when the run failed."""
    reason: str = ""
    traceback: str | None = None
    exit_code: int | None = None


class Backend(Protocol):
    """Runs specs somewhere; handles identify submitted runs."""

    def open(self) -> None: ...
    def slots(self) -> int: ...
    def submit(self, spec: RunSpec) -> Any: ...
    def ready(self, handles: list[Any], timeout: float) -> list[Any]: ...
    def has_result(self, handle: Any) -> bool: ...
    def collect(self, handle: Any) -> Ended: ...
    def cancel(self, handle: Any) -> None: ...
    def close(self) -> None: ...


class Executor:
    """The one scheduling loop: skip runs finished earlier, keep the backend's slots busy, record each outcome
    through the sweep as it arrives, and kill runs over the per-run time limit (counted from submission)."""

    def __init__(self, backend: Backend, time_limit: float | None = None) -> None:
        self.backend = backend
        self.time_limit = time_limit

    def run(
        self,
        sweep: Sweep,
        specs: list[RunSpec],
        on_done: Callable[[Outcome], None],
        on_start: Callable[[RunSpec], None] | None = None,
    ) -> list[Outcome]:
        """Run every unfinished spec; on_start(spec) when a run is submitted, on_done(outcome) when one ends."""
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
        running: dict[Any, tuple[RunSpec, float]] = {}
        try:
            while pending or running:
                while pending and len(running) < backend.slots():
                    spec = pending.popleft()
                    sweep.start(spec)
                    running[backend.submit(spec)] = (spec, time.monotonic())
                    if on_start is not None:
                        on_start(spec)
                for handle in backend.ready(list(running), 0.5):
                    spec, _ = running.pop(handle)
                    finish(record(sweep, spec, backend.collect(handle)))
                for handle, (spec, started) in list(running.items()):
                    late = self.time_limit is not None and time.monotonic() - started > self.time_limit
                    if late and not backend.has_result(handle):  # a result that arrived meanwhile is kept
                        backend.cancel(handle)
                        del running[handle]
                        finish(sweep.record_failure(spec, timeout_reason(self.time_limit)))
        finally:
            for handle in running:
                backend.cancel(handle)
            backend.close()
        return outcomes


def record(sweep: Sweep, spec: RunSpec, ended: Ended) -> Outcome:
    """Write what a backend reported for one run: its result files, or failure.json."""
    if ended.result is None:
        return sweep.record_failure(spec, ended.reason, ended.traceback, ended.exit_code)
    return sweep.record_result(spec, ended.result.metrics, ended.result.evals, ended.result.summary)


def timeout_reason(limit: float) -> str:
    return f"timeout: exceeded the per-run limit of {limit:g} s"


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


def _local_worker(conn: Connection, spec_data: dict[str, Any]) -> None:
    """Local worker entry point: train one spec and send ("result", RunResult) or ("error", reason, traceback)."""
    try:
        message = ("result", train_in_worker(spec_data))
    except Exception as err:
        message = ("error", f"{type(err).__name__}: {err}", traceback.format_exc())
    conn.send(message)
    conn.close()


class LocalBackend:
    """Up to `jobs` worker processes on this machine, one per run; results come back through a pipe."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.procs: dict[Connection, Any] = {}

    def open(self) -> None:
        self.context = worker_context()

    def slots(self) -> int:
        return self.jobs

    def submit(self, spec: RunSpec) -> Connection:
        receiver, sender = self.context.Pipe(duplex=False)
        proc = self.context.Process(target=_local_worker, args=(sender, spec.to_dict()))
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

    Only the spec (plain data) travels to a worker and only the RunResult travels back, so worker machines need
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

    def submit(self, spec: RunSpec) -> Any:
        return self.remote.remote(spec.to_dict())

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
