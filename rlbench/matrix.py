"""The experiment matrix: presets (budgets), built-in envs, and expansion into cells (algo × env × seed)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from rlbench.algos import PRESETS, AlgoConfig
from rlbench.algos.config import FIELDS
from rlbench.rollout import env_spec

PRESET_NAMES = ("smoke", "quick", "full")


class MatrixError(ValueError):
    """Bad user input for the matrix; the message names the value and what is allowed."""


@dataclass(frozen=True)
class EnvEntry:
    """A built-in matrix environment: its env-step budget per preset and algorithm settings it needs."""

    id: str
    budgets: dict[str, int]
    """Env steps per run for each preset (the same for every algorithm)."""
    family: str = "classic"
    algo_overrides: dict[str, Any] = field(default_factory=dict)
    """Settings applied to every algorithm on this env before the user's --set."""


BUILTIN_ENVS: dict[str, EnvEntry] = {
    e.id: e
    for e in (
        EnvEntry("CartPole-v1", {"smoke": 3_000, "quick": 100_000, "full": 500_000}),
        EnvEntry("Acrobot-v1", {"smoke": 3_000, "quick": 100_000, "full": 500_000}),
        EnvEntry("MountainCar-v0", {"smoke": 3_000, "quick": 200_000, "full": 1_000_000}),
        EnvEntry("Pendulum-v1", {"smoke": 3_000, "quick": 200_000, "full": 1_000_000}),
    )
}


@dataclass(frozen=True)
class Preset:
    """A named budget level: default envs, seeds, evaluation episodes."""

    name: str
    envs: tuple[str, ...]
    seeds: int
    eval_episodes: int
    description: str


PRESETS_BY_NAME: dict[str, Preset] = {
    "smoke": Preset("smoke", ("CartPole-v1", "Acrobot-v1"), 2, 2, "tiny budgets for tests: the default matrix in ≤ 60 s"),
    "quick": Preset("quick", ("CartPole-v1", "Acrobot-v1"), 5, 10, "the default: the default matrix in ≤ 15 min on 2 cores"),
    "full": Preset("full", tuple(BUILTIN_ENVS), 10, 20, "longer budgets on every classic-control env"),
}

DEFAULT_GROUP_SIZES = (2, 4, 8, 16)


def env_slug(env_id: str) -> str:
    """A directory-safe name for an env id (`rlbench/TextGen-v0` → `rlbench__TextGen-v0`)."""
    return env_id.replace("/", "__").replace(":", "--")


@dataclass(frozen=True)
class Cell:
    """One run: an algorithm configuration on one env with one seed and budget."""

    algo: AlgoConfig
    env_id: str
    seed: int
    steps: int
    eval_episodes: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def run_dir(self, out: Path) -> Path:
        return out / env_slug(self.env_id) / self.algo.name / f"seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what config.json records)."""
        return {
            "algo": dataclasses.asdict(self.algo),
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "seed": self.seed,
            "steps": self.steps,
            "eval_episodes": self.eval_episodes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(
            algo=AlgoConfig(**data["algo"]),
            env_id=data["env_id"],
            env_kwargs=data["env_kwargs"],
            seed=data["seed"],
            steps=data["steps"],
            eval_episodes=data["eval_episodes"],
        )


def parse_list(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise MatrixError(f"empty {what} list {text!r}")
    return items


def parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in parse_list(text, what)]
    except ValueError:
        raise MatrixError(f"{what} must be comma-separated integers, got {text!r}") from None


def parse_value(text: str) -> Any:
    """A --set value as data: none/null, true/false, a JSON number, or else the plain string."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()
    return value if isinstance(value, (int, float)) else text.strip()


def parse_sets(items: list[str], algo_names: list[str]) -> dict[str | None, dict[str, Any]]:
    """`[ALGO.]FIELD=VALUE` items → {algo or None (= every algorithm): {field: value}}."""
    out: dict[str | None, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MatrixError(f"malformed --set {item!r}: expected [ALGO.]FIELD=VALUE, e.g. grpo.kl_coef=0")
        target, _, name = key.strip().rpartition(".")
        if target and target not in algo_names:
            raise MatrixError(f"--set {item!r}: unknown algorithm {target!r}; allowed: {', '.join(algo_names)}")
        if name not in FIELDS or name == "name":
            allowed = ", ".join(f for f in FIELDS if f != "name")
            raise MatrixError(f"--set {item!r}: unknown setting {name!r}; allowed: {allowed}")
        out.setdefault(target or None, {})[name] = parse_value(value)
    return out


def resolve_algos(names: list[str]) -> list[str]:
    if names == ["all"]:
        return list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise MatrixError(f"unknown algorithm(s) {unknown}; allowed: {', '.join(PRESETS)}, or all")
    return names


def resolve_envs(names: list[str], preset: Preset) -> list[str]:
    """Env names, `classic` or `all` → Gymnasium ids, each checked to be registered and supported."""
    ids: list[str] = []
    for name in names:
        if name == "classic":
            ids += [e.id for e in BUILTIN_ENVS.values() if e.family == "classic"]
        elif name == "all":
            ids += list(BUILTIN_ENVS)
        else:
            ids.append(name)
    for env_id in ids:
        check_env_id(env_id)
    return list(dict.fromkeys(ids))


def check_env_id(env_id: str) -> None:
    """Raise MatrixError unless env_id is a registered Gymnasium id (importing `module:` prefixes)."""
    try:
        env_spec(env_id)
    except (ImportError, gym.error.Error) as err:
        builtin = ", ".join(BUILTIN_ENVS)
        raise MatrixError(
            f"unknown env {env_id!r} ({err}); allowed: {builtin}, classic, all, or any registered Gymnasium id"
        ) from None


def build_cells(
    algos: list[str],
    envs: list[str] | None,
    preset_name: str,
    seeds: list[int] | None,
    steps: int | None,
    group_sizes: list[int],
    sets: list[str],
    env_kwargs: dict[str, Any] | None = None,
) -> list[Cell]:
    """Expand the user's choices into validated cells; raises MatrixError naming the first bad value."""
    if preset_name not in PRESETS_BY_NAME:
        raise MatrixError(f"unknown preset {preset_name!r}; allowed: {', '.join(PRESETS_BY_NAME)}")
    preset = PRESETS_BY_NAME[preset_name]
    algo_names = resolve_algos(algos)
    env_ids = resolve_envs(envs or list(preset.envs), preset)
    seeds = list(range(preset.seeds)) if seeds is None else seeds
    if not seeds or any(s < 0 for s in seeds):
        raise MatrixError(f"seeds must be non-negative integers, got {seeds}")
    if steps is not None and steps <= 0:
        raise MatrixError(f"--steps must be > 0, got {steps}")
    bad_g = [g for g in group_sizes if g < 2]
    if bad_g:
        raise MatrixError(f"group sizes must be >= 2 (a group needs two samples to give a baseline), got {bad_g}")

    columns: list[tuple[str, AlgoConfig]] = []
    for name in algo_names:
        base = PRESETS[name]
        if base.advantage == "group":
            columns += [(name, base.replace(name=f"{name}-g{g}", group_size=g)) for g in group_sizes]
        else:
            columns.append((name, base))
    overrides = parse_sets(sets, algo_names + [c.name for _, c in columns])

    cells = []
    for env_id in env_ids:
        entry = BUILTIN_ENVS.get(env_id)
        budget = steps or (entry.budgets[preset.name] if entry else _custom_budget(preset.name))
        for family, cfg in columns:
            changes = {**(entry.algo_overrides if entry else {}), **overrides.get(None, {}),
                       **overrides.get(family, {}), **overrides.get(cfg.name, {})}
            try:
                resolved = cfg.replace(**changes)
            except (ValueError, TypeError) as err:
                raise MatrixError(f"invalid setting for {cfg.name}: {err}") from None
            for seed in seeds:
                cells.append(Cell(resolved, env_id, seed, budget, preset.eval_episodes, dict(env_kwargs or {})))
    return cells


def _custom_budget(preset: str) -> int:
    """Budget for an env without a built-in entry: CartPole's."""
    return BUILTIN_ENVS["CartPole-v1"].budgets[preset]
