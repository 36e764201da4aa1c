"""Sweep progress as data: which runs are pending, running and finished, and a cost-weighted ETA.

Nothing here draws; rlbench.cli renders this state with Rich on a terminal, or as plain lines in logs.
Every method takes the current time (`now`, seconds on any monotonic clock) so the logic is testable
with synthetic events.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rlbench.spec import seed_batches


@dataclass(frozen=True)
class Work:
    """One run as the ETA sees it: its env, its column's family, its env-step budget and its matrix cell
    (RunSpec.cell: runs of one cell share seed batches; None: a batch of its own)."""

    env: str
    family: str
    steps: int
    cell: str | None = None


def column_family(column: str) -> str:
    """The algorithm family of a matrix column: its leading name (`grpo-g16` → `grpo`, `ppo[clip=none]` → `ppo`)."""
    match = re.match(r"[A-Za-z0-9_]+", column)
    return match.group(0) if match else column


class CostModel:
    """A run's wall time = a per-run overhead (worker start, setup) + its budget × the seconds per env step of
    its (env, family), from the runs measured so far.

    The overhead is the mean over runs of wall time − training time. A measured pair's rate is its own ratio
    of sums (training seconds ÷ env steps). An unmeasured pair uses the env's rate over all its measured
    families (or the sweep's, for an env not yet measured) times the family's relative cost: the geometric
    mean, over envs where it was measured, of its rate ÷ that env's rate.
    """

    def __init__(self) -> None:
        self._seconds: dict[tuple[str, str], float] = {}
        self._steps: dict[tuple[str, str], int] = {}
        self._overheads: list[float] = []

    def observe(self, work: Work, seconds: float, train_seconds: float | None = None) -> None:
        """Record one finished run's wall time and the part of it spent training (default: all of it)."""
        train = seconds if train_seconds is None else min(seconds, train_seconds)
        key = (work.env, work.family)
        self._seconds[key] = self._seconds.get(key, 0.0) + train
        self._steps[key] = self._steps.get(key, 0) + work.steps
        self._overheads.append(seconds - train)

    @property
    def measured(self) -> bool:
        """Whether any run has been observed (before that there is no estimate)."""
        return bool(self._steps)

    @property
    def overhead(self) -> float:
        """Mean seconds of a run not spent training (0 before any observation)."""
        return sum(self._overheads) / len(self._overheads) if self._overheads else 0.0

    def _ratio(self, keys: Iterable[tuple[str, str]]) -> float:
        keys = list(keys)
        return sum(self._seconds[k] for k in keys) / max(1, sum(self._steps[k] for k in keys))

    def _env_rate(self, env: str) -> float:
        keys = [k for k in self._steps if k[0] == env] or list(self._steps)
        return self._ratio(keys)

    def _family_factor(self, family: str) -> float:
        logs = [math.log(self._ratio([k]) / self._env_rate(k[0])) for k in self._steps if k[1] == family]
        logs = [x for x in logs if math.isfinite(x)]
        return math.exp(sum(logs) / len(logs)) if logs else 1.0

    def rate(self, env: str, family: str) -> float:
        """Estimated seconds per env step of `family` on `env`; needs at least one observation."""
        if not self.measured:
            raise ValueError("no run measured yet")
        if (env, family) in self._steps:
            return self._ratio([(env, family)])
        return self._env_rate(env) * self._family_factor(family)

    def expected(self, work: Work) -> float:
        """Estimated wall time of one run: the overhead + its budget × its estimated seconds per env step."""
        return self.overhead + work.steps * self.rate(work.env, work.family)


def schedule_span(workers: int, busy: Iterable[float], queue: Iterable[float]) -> float:
    """Time until all work is done when `workers` slots, busy for `busy` more seconds each, take the
    `queue` of run durations in order, each from the first slot to become free."""
    slots = sorted(busy)[:workers]
    slots += [0.0] * (workers - len(slots))
    heapq.heapify(slots)
    for cost in queue:
        heapq.heappush(slots, heapq.heappop(slots) + cost)
    return max(slots, default=0.0)


@dataclass
class Finished:
    """A run that ended in this sweep: its work, status, final return (NaN if none) and wall time."""

    key: str
    work: Work
    status: str
    final_return: float
    seconds: float


@dataclass(frozen=True)
class RunEnd:
    """What a finished run reports: its status, final return and training time (NaN when it has none)."""

    status: str
    final_return: float = math.nan
    train_seconds: float = math.nan


@dataclass
class SweepProgress:
    """Pending, running and finished runs of one sweep (keyed by run directory) and the ETA from them."""

    works: dict[str, Work]
    workers: int
    seed_batch: int = 1
    """Runs of one cell a worker trains together (the executor's seed_batch)."""
    model: CostModel = field(default_factory=CostModel)
    started: dict[str, float] = field(default_factory=dict)
    batches: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each started run's seed batch (the runs one worker trains together)."""
    finished: list[Finished] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)

    def start(self, keys: Sequence[str], now: float) -> None:
        """A seed batch of runs started (one worker trains them together; a single run is a batch of one)."""
        for key in keys:
            self.started[key] = now
            self.batches[key] = tuple(keys)

    def skip(self, key: str) -> None:
        """A run finished in an earlier sweep: it costs nothing now and says nothing about speed."""
        self.skipped.add(key)

    def finish(self, key: str, now: float, end: RunEnd) -> Finished:
        """A run ended (any status: a failed or timed-out run also took the sweep's time); its wall time — its
        batch's time so far ÷ the batch's size, as the runs of a batch share one worker — refines the cost model,
        split into training and overhead where the run reports its training time."""
        seconds = (now - self.started.pop(key, now)) / len(self.batches.pop(key, (key,)))
        done = Finished(key, self.works[key], end.status, end.final_return, seconds)
        train = end.train_seconds if math.isfinite(end.train_seconds) else None
        self.model.observe(done.work, seconds, train)
        self.finished.append(done)
        return done

    @property
    def pending(self) -> list[str]:
        """Runs neither started, finished nor skipped, in sweep order."""
        ended = {f.key for f in self.finished} | self.skipped
        return [k for k in self.works if k not in ended and k not in self.started]

    def done_count(self, env: str | None = None) -> int:
        """Finished or skipped runs (of one env, or all)."""
        keys = [f.key for f in self.finished] + list(self.skipped)
        return sum(1 for k in keys if env is None or self.works[k].env == env)

    def total(self, env: str | None = None) -> int:
        return sum(1 for w in self.works.values() if env is None or w.env == env)

    def envs(self) -> list[str]:
        """The sweep's envs in first-seen order."""
        return list(dict.fromkeys(w.env for w in self.works.values()))

    def eta(self, now: float) -> float | None:
        """Seconds until the sweep ends, or None before any run has been measured.

        Each run costs budget × its estimated seconds per env step; a running seed batch costs what the
        estimates of its runs have left (at least 0); the pending runs, grouped into seed batches as the executor
        groups them (rlbench.spec.seed_batches), are dealt to `workers` slots in sweep order.
        """
        if not self.model.measured:
            return None
        running = {self.batches[k]: t for k, t in self.started.items()}
        busy = [
            max(0.0, sum(self.model.expected(self.works[k]) for k in keys if k in self.started) - (now - t))
            for keys, t in running.items()
        ]
        batches = seed_batches(self.pending, self.seed_batch, lambda k: self.works[k].cell or k)
        queue = [sum(self.model.expected(self.works[k]) for k in batch) for batch in batches]
        return schedule_span(self.workers, busy, queue)
