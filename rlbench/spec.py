"""What one run is (RunSpec) and how it can end (Status): the bottom of the import graph, plain data only."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from rlbench.algos.config import AlgoConfig


class Status(str, Enum):
    """How a planned run stands. OK, DIVERGED and ENV_NAN finished training (summary.json); FAILED crashed,
    hung or lost its worker (failure.json); UNFINISHED started and never ended (config.json only); MISSING
    never started; SKIPPED finished in an earlier sweep (reported while resuming)."""

    OK = "ok"
    DIVERGED = "diverged"
    ENV_NAN = "env_nan"
    FAILED = "failed"
    UNFINISHED = "unfinished"
    MISSING = "missing"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # as its value's, so a status and its string are one key in sets, dicts, pandas
        return hash(self.value)


DONE = (Status.OK, Status.DIVERGED, Status.ENV_NAN)
"""Statuses of runs that finished training: their metrics, evaluations and final return exist."""


def env_slug(env_id: str) -> str:
    """A directory-safe name for an env id (`rlbench/TextGen-v0` → `rlbench__TextGen-v0`)."""
    return env_id.replace("/", "__").replace(":", "--")


@dataclass(frozen=True)
class RunSpec:
    """One run: an algorithm configuration on one env with one seed and budget (a cell of the matrix)."""

    algo: AlgoConfig
    env_id: str
    seed: int
    steps: int
    """Env-step budget."""
    eval_episodes: int
    eval_points: int
    """Evaluations, evenly spaced in env steps (plus one before training)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        """(env id, matrix column, seed): unique within a sweep."""
        return (self.env_id, self.algo.name, self.seed)

    @property
    def cell(self) -> str:
        """Everything but the seed, as canonical JSON: runs with the same cell can share a seed batch."""
        return json.dumps({k: v for k, v in self.to_dict().items() if k != "seed"}, sort_keys=True, default=str)

    def run_dir(self, out: Path) -> Path:
        return Path(out) / env_slug(self.env_id) / self.algo.name / f"seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data (what config.json and sweep.json record)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """The spec a to_dict() (or a config.json holding one plus provenance) describes."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields and k != "algo"}, algo=AlgoConfig(**data["algo"]))


Item = TypeVar("Item")


def seed_batches(items: list[Item], size: int, cell: Callable[[Item], str]) -> list[list[Item]]:
    """`items` in batches of up to `size` items of one cell (RunSpec.cell), in the order of each batch's first
    item: the seed batches the executor submits."""
    open_batches: dict[str, list[Item]] = {}
    batches: list[list[Item]] = []
    for item in items:
        batch = open_batches.get(cell(item))
        if batch is None or len(batch) == size:
            batch = open_batches[cell(item)] = []
            batches.append(batch)
        batch.append(item)
    return batches
