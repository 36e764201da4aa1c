"""The experiment matrix: presets (budgets), built-in envs, and expansion into cells (algo × env × seed)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from rlbench.algos import PRESETS, AlgoConfig
from rlbench.algos.config import SETTABLE
from rlbench.envs import textgen
from rlbench.registry import BUILTIN_ENVS
from rlbench.rollout import env_spec
from rlbench.sb3_mapping import check_sb3_column
from rlbench.spec import RunSpec


class MatrixError(ValueError):
    """Bad user input for the matrix; the message names the value and what is allowed."""


@dataclass(frozen=True)
class BudgetPreset:
    """A named budget level: default envs, seeds, evaluation episodes and points."""

    name: str
    envs: tuple[str, ...]
    seeds: int
    eval_episodes: int
    eval_points: int
    """Evaluations per run, evenly spaced in env steps (plus one before training)."""
    description: str


DEFAULT_ENVS = ("CartPole-v1", "Acrobot-v1", textgen.ENV_ID)
BUDGET_PRESETS: dict[str, BudgetPreset] = {
    "smoke": BudgetPreset(
        "smoke", DEFAULT_ENVS, 2, 2, 2, "tiny budgets, for tests and trying the CLI (not for conclusions)"
    ),
    "quick": BudgetPreset(
        "quick", DEFAULT_ENVS, 5, 10, 10, "the default: budgets that decide the claims (times: README)"
    ),
    "full": BudgetPreset("full", tuple(BUILTIN_ENVS), 10, 20, 20, "longer budgets on every built-in env"),
}

DEFAULT_GROUP_SIZES = (2, 4, 8, 16)

MAX_CELLS = 100_000
"""Largest matrix accepted: at a few seconds per run, more would take weeks on one machine, and a typo (an extra
zero in --seeds) should be refused at once rather than spend minutes building cells."""

DEFAULT_ALGOS = ("pg", "pg_centred", "critic", "ppo", "ppo_noclip", "ppo_kl", "grpo", "grpo_critic")
"""What `--algos all` runs: the ladder plus the control columns the claims' primary tests compare it with."""

CONTROLS = {"pg_centred": "pg", "ppo_noclip": "ppo", "grpo_critic": "grpo", "sb3_ppo": "ppo"}
"""Control preset → the preset it ablates or mirrors: the control takes the env's and the user's settings of that
preset first, so a primary test's two columns still differ only in the claim's factor (e.g. TextGen's grpo β = 1),
and `sb3_ppo` runs with `ppo`'s settings on each env (`--set ppo.lr=…` changes both)."""

CONTROL_GROUP_SIZES = (4, 8)
"""G values of a group-collection control without the group advantage (`grpo_critic`), when the sweep has
them: two G values give C5 its per-G tests at half the cost of all four (G = 16 is the costliest per update,
G = 2 the degenerate group); with none of them in the sweep, the control runs at every G of the sweep."""


def get_budget_preset(name: str) -> BudgetPreset:
    if name not in BUDGET_PRESETS:
        raise MatrixError(f"unknown preset {name!r}; allowed: {', '.join(BUDGET_PRESETS)}")
    return BUDGET_PRESETS[name]


def parse_list(text: str, what: str) -> list[str]:
    """Comma-separated items; commas inside [...] belong to their item (`ppo[clip=none,epochs=1],grpo`)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text + ","):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if depth != 0:
        raise MatrixError(f"unbalanced brackets in {what} list {text!r}")
    items = [x for x in items if x]
    if not items:
        raise MatrixError(f"empty {what} list {text!r}")
    return items


def parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in parse_list(text, what)]
    except ValueError:
        raise MatrixError(f"{what} must be comma-separated integers, got {text!r}") from None


def parse_floats(text: str, what: str) -> list[float]:
    """Comma-separated numbers; MatrixError naming the first that is not one."""
    values = []
    for item in parse_list(text, what):
        try:
            values.append(float(item))
        except ValueError:
            raise MatrixError(f"{what}: {item!r} is not a number (expected e.g. 0,0.1,1)") from None
    return values


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


def parse_set(item: str) -> tuple[str, Any]:
    """`[ALGO.]FIELD=VALUE` → (key, value)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise MatrixError(f"malformed --set {item!r}: expected [ALGO.]FIELD=VALUE, e.g. grpo.kl_coef=0")
    return key.strip(), parse_value(value)


def group_overrides(pairs: list[tuple[str, Any]], algo_names: list[str]) -> dict[str | None, dict[str, Any]]:
    """(`[ALGO.]FIELD`, value) pairs → {algo or None (= every algorithm): {field: value}}, names checked."""
    out: dict[str | None, dict[str, Any]] = {}
    for key, value in pairs:
        target, _, name = key.rpartition(".")
        if target and target not in algo_names:
            raise MatrixError(f"setting {key!r}: unknown algorithm {target!r}; allowed: {', '.join(algo_names)}")
        if name not in SETTABLE:
            raise MatrixError(f"setting {key!r}: unknown field {name!r}; allowed: {', '.join(SETTABLE)}")
        out.setdefault(target or None, {})[name] = value
    return out


def resolve_algos(names: list[str]) -> list[str]:
    if names == ["all"]:
        return list(DEFAULT_ALGOS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise MatrixError(f"unknown algorithm(s) {unknown}; allowed: {', '.join(PRESETS)}, or all (the default)")
    return names


@dataclass(frozen=True)
class ColumnRequest:
    """A matrix column as the user asked for it: a preset, settings of its own, and optionally a name of its own.

    Written `PRESET` or `PRESET[FIELD=VALUE,...]` in --algos; a matrix file's `[columns.NAME]` table gives the name.
    """

    preset: str
    settings: tuple[tuple[str, Any], ...] = ()
    name: str | None = None


def parse_column(entry: str | ColumnRequest) -> list[ColumnRequest]:
    """An --algos entry → its column requests (`all` → the default columns); names and fields checked."""
    if isinstance(entry, ColumnRequest):
        requests = [entry]
    elif entry == "all":
        requests = [ColumnRequest(name) for name in DEFAULT_ALGOS]
    else:
        preset, bracket, rest = entry.partition("[")
        if bracket and not rest.endswith("]"):
            raise MatrixError(f"algorithm {entry!r}: expected PRESET or PRESET[FIELD=VALUE,...]")
        items = parse_list(rest[:-1], f"settings of {entry!r}") if bracket else []
        requests = [ColumnRequest(preset.strip(), tuple(parse_set(item) for item in items))]
    for request in requests:
        resolve_algos([request.preset])
        for key, _ in request.settings:
            if key not in SETTABLE:
                raise MatrixError(f"setting {key!r} of {request.preset}: unknown field; allowed: {', '.join(SETTABLE)}")
    return requests


def settings_label(changes: dict[str, Any]) -> str:
    """`[clip=none,epochs=1]` for {"clip": None, "epochs": 1} (sorted by field), "" for no changes."""
    if not changes:
        return ""
    shown = {None: "none", True: "true", False: "false"}
    parts = [f"{k}={shown.get(v, v) if isinstance(v, (bool, type(None))) else v}" for k, v in sorted(changes.items())]
    return "[" + ",".join(parts) + "]"


@dataclass(frozen=True)
class EnvRequest:
    """An env as the user asked for it: id, constructor kwargs, and an optional budget of its own."""

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None


def resolve_envs(names: list[str], kwargs: dict[str, Any] | None = None) -> list[EnvRequest]:
    """Env names, `classic` or `all` → requests for checked Gymnasium ids, all with the same kwargs."""
    ids: list[str] = []
    for name in names:
        if name == "classic":
            ids += [e.id for e in BUILTIN_ENVS.values() if e.family == "classic"]
        elif name == "all":
            ids += list(BUILTIN_ENVS)
        else:
            ids.append(name)
    return [EnvRequest(env_id, dict(kwargs or {})) for env_id in dict.fromkeys(ids)]


def import_env_modules(modules: list[str]) -> dict[str, str]:
    """Import each module (it registers its envs with Gymnasium); return {id it registered: module}.

    Requests for those ids are then written in Gymnasium's `module:id` form, so that worker processes, which
    import nothing on their own, register them too.
    """
    registered: dict[str, str] = {}
    for module in modules:
        before = set(gym.registry)
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise MatrixError(f"--env-module {module!r} cannot be imported: {err}") from None
        registered |= dict.fromkeys(sorted(set(gym.registry) - before), module)
    return registered


def qualify(requests: list[EnvRequest], registered: dict[str, str]) -> list[EnvRequest]:
    """Requests whose id a --env-module registered, rewritten as `module:id`."""
    return [dataclasses.replace(r, id=f"{registered[r.id]}:{r.id}") if r.id in registered else r for r in requests]


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
    algos: list[str | ColumnRequest],
    envs: list[EnvRequest] | None,
    preset_name: str,
    seeds: list[int] | None,
    steps: int | None,
    group_sizes: list[int],
    sets: list[tuple[str, Any]],
    kl_coefs: list[float] | None = None,
) -> list[RunSpec]:
    """Expand the user's choices into validated cells; raises MatrixError naming the first bad value.

    Budget per env: `steps`, else the env request's own, else the preset's. Settings apply in order: the env's
    built-in overrides, then `sets` (`FIELD` for every algorithm, `ALGO.FIELD`, `ALGO-gG.FIELD`,
    `ALGO[-gG]-bβ.FIELD`), then a column's own settings. `kl_coefs` (the β axis) turns every column of a preset
    with a KL term into one column per β (`ppo_kl-b0.3`, `grpo-g8-b0.3`), whose kl_coef is β whatever the
    settings say. A column whose settings differ from its preset's on that env is named by them
    (`ppo[clip=none]`), so two different configs never share a column name.
    """
    preset = get_budget_preset(preset_name)
    check_size(len(seeds or []), "seeds")
    for what, values in (
        ("seed", seeds or []),
        ("group size", group_sizes),
        ("KL coefficient", [f"{b:g}" for b in kl_coefs or []]),
        ("env", [r.id for r in envs or []]),
    ):
        repeated = sorted({str(v) for v, n in Counter(values).items() if n > 1})
        if repeated:
            raise MatrixError(f"{what} {', '.join(repeated)} is listed twice; each cell of the matrix runs once")
    requests = [request for entry in algos for request in parse_column(entry)]
    env_requests = envs if envs is not None else resolve_envs(list(preset.envs))
    for request in env_requests:
        check_env_id(request.id)
        if request.steps is not None and (not _is_int(request.steps) or request.steps <= 0):
            raise MatrixError(f"steps for {request.id} must be > 0, got {request.steps}")
    seeds = list(range(preset.seeds)) if seeds is None else seeds
    if not seeds or any(not _is_int(s) or s < 0 for s in seeds):
        raise MatrixError(f"seeds must be non-negative integers, got {seeds}")
    if steps is not None and (not _is_int(steps) or steps <= 0):
        raise MatrixError(f"--steps must be an integer > 0, got {steps!r}")
    bad_g = [g for g in group_sizes if not _is_int(g) or g < 2]
    if bad_g:
        raise MatrixError(f"group sizes must be >= 2 (a group needs two samples to give a baseline), got {bad_g}")

    bad_b = [b for b in kl_coefs or [] if not (math.isfinite(b) and b >= 0)]
    if bad_b:
        raise MatrixError(f"KL coefficients β must be finite and >= 0, got {', '.join(f'{b:g}' for b in bad_b)}")

    columns = [column for request in requests for column in _columns(request, group_sizes, kl_coefs)]
    check_size(len(columns) * len(env_requests) * len(seeds), "cells (columns × envs × seeds)")
    _check_explicit_names(requests)
    targets = list(dict.fromkeys([r.preset for r in requests] + [n for c in columns for n in (c.stem, c.cfg.name)]))
    overrides = group_overrides(sets, targets)

    cells = []
    for env_request in env_requests:
        entry = BUILTIN_ENVS.get(env_request.id)
        budget = steps or env_request.steps or (entry.budgets if entry else _custom_budgets())[preset.name]
        env_overrides = group_overrides(list(entry.algo_overrides.items()) if entry else [], list(PRESETS) + targets)
        names: dict[str, str] = {}
        for column in columns:
            request, cfg = column.request, column.cfg
            ablated = CONTROLS.get(request.preset, request.preset)
            env_changes, user_changes = (
                {
                    **level.get(None, {}),
                    **level.get(ablated, {}),
                    **level.get(request.preset, {}),
                    **level.get(column.stem, {}),
                    **level.get(cfg.name, {}),
                }
                for level in (env_overrides, overrides)
            )
            # A column's own settings win over --set, and its β on the β axis over both; the name lists what
            # differs from the preset on this env (for an explicitly named column: what --set changed beyond the
            # column's own settings).
            forced = {} if column.beta is None else {"kl_coef": float(column.beta)}
            changes = {**user_changes, **column.own, **forced}
            try:
                base = cfg.replace(**{**env_changes, **forced})
                reference = base.replace(**column.own) if request.name else base
                renamed = {k: v for k, v in changes.items() if getattr(reference, k) != v}
                resolved = base.replace(**changes, name=cfg.name + settings_label(renamed))
            except (ValueError, TypeError) as err:
                raise MatrixError(f"invalid setting for {cfg.name}: {err}") from None
            if resolved.name in names:
                raise MatrixError(
                    f"column {resolved.name!r} is listed twice on {env_request.id} (as {names[resolved.name]} and "
                    f"{_describe(request)}); each column of the matrix runs once"
                )
            names[resolved.name] = _describe(request)
            for seed in seeds:
                points = entry.eval_points if entry and entry.eval_points else preset.eval_points
                cells.append(
                    RunSpec(
                        resolved, env_request.id, seed, budget, preset.eval_episodes, points, dict(env_request.kwargs)
                    )
                )
    check_trainers(cells)
    return cells


def check_trainers(cells: list[RunSpec]) -> None:
    """MatrixError for a column Stable-Baselines3 trains on an env, or with settings, SB3 cannot run
    (rlbench.sb3_mapping.check_sb3_column: the message names the column, the env and what is allowed)."""
    checked = set()
    for cell in cells:
        key = (cell.algo, cell.env_id, json.dumps(cell.env_kwargs, sort_keys=True), cell.steps)
        if cell.algo.trainer == "rlbench" or key in checked:
            continue
        checked.add(key)
        try:
            check_sb3_column(cell.algo, cell.env_id, cell.env_kwargs, cell.steps)
        except ValueError as err:
            raise MatrixError(str(err)) from None


def _describe(request: ColumnRequest) -> str:
    return request.name or request.preset + settings_label(dict(request.settings))


def _check_explicit_names(requests: list[ColumnRequest]) -> None:
    """An explicit column name must not read as a preset's column (`ppo`, `grpo-g4`, `ppo[...]`)."""
    for request in requests:
        if request.name is None:
            continue
        stem = request.name.split("[")[0].rsplit("-g", 1)[0]
        if stem in PRESETS or not request.name or "[" in request.name or "/" in request.name:
            raise MatrixError(
                f"column name {request.name!r}: names of presets, brackets and slashes are reserved; "
                "choose a name of your own, e.g. ppo_wide"
            )


@dataclass(frozen=True)
class _Column:
    """One matrix column before env and user settings: its request, the preset's config under the column's
    name, the column's own settings, its name without the β suffix, and its β on the β axis (or None)."""

    request: ColumnRequest
    cfg: AlgoConfig
    own: dict[str, Any]
    stem: str
    beta: float | None


def _columns(request: ColumnRequest, group_sizes: list[int], kl_coefs: list[float] | None) -> list[_Column]:
    """A column request's columns: one per G for group presets (`name-gG`), one per CONTROL_GROUP_SIZES G for a
    group collection without the group advantage, else the preset itself; each once per β of the β axis when
    the preset has a KL term (`name[-gG]-bβ`)."""
    base = PRESETS[request.preset]
    own = dict(request.settings)
    name = request.name or request.preset
    if base.advantage == "group":
        stems = [(f"{name}-g{g}", g) for g in group_sizes]
    elif base.grouped:
        stems = [(f"{name}-g{g}", g) for g in [g for g in group_sizes if g in CONTROL_GROUP_SIZES] or group_sizes]
    else:
        stems = [(name, base.group_size)]
    betas: list[float | None] = list(kl_coefs) if kl_coefs and base.kl_coef > 0 else [None]
    return [
        _Column(request, base.replace(name=stem if b is None else f"{stem}-b{b:g}", group_size=g), own, stem, b)
        for stem, g in stems
        for b in betas
    ]


def dispatch_order(cells: list[RunSpec]) -> list[RunSpec]:
    """The order runs start in: seed by seed, and within a seed column by column with every env in turn, so the
    first runs measure each env and algorithm family and the ETA's cost model has no env it must guess. Every
    run is independent of the others, so the order changes no result."""
    rank = {key: {v: i for i, v in enumerate(dict.fromkeys(key(c) for c in cells))} for key in _ORDER_KEYS}
    return sorted(cells, key=lambda c: tuple(rank[key][key(c)] for key in _ORDER_KEYS))


_ORDER_KEYS = (lambda c: c.seed, lambda c: c.algo.name, lambda c: c.env_id)


def check_size(count: int, what: str) -> None:
    """MatrixError when a matrix would hold more than MAX_CELLS of something."""
    if count > MAX_CELLS:
        raise MatrixError(f"the matrix would have {count:,} {what}; at most {MAX_CELLS:,} are allowed")


def check_batches(cells: list[RunSpec]) -> None:
    """MatrixError for a cell whose single update collects more env steps than its whole budget: n_envs × n_steps
    in `steps` mode, at least one step per episode (n_starts × group_size) in `episodes` mode."""
    for cell in cells:
        algo = cell.algo
        steps_mode = algo.collect == "steps"
        least = algo.n_envs * algo.n_steps if steps_mode else algo.streams
        if least > cell.steps:
            lower = "n_envs/n_steps" if steps_mode else "n_starts/--group-sizes"
            raise MatrixError(
                f"{algo.name} on {cell.env_id}: one update collects at least {least:,} env steps, more than the "
                f"run's whole budget of {cell.steps:,}; raise --steps or lower {lower}"
            )


def resolve_spec(name: str, env_id: str, group_size: int = 8, seed: int = 0, steps: int = 1) -> RunSpec:
    """The one run of preset `name` on env_id as the matrix resolves it (the env's overrides applied; group
    presets at G), with the smoke preset's evaluations."""
    return build_cells([name], [EnvRequest(env_id)], "smoke", [seed], steps, [group_size], [])[0]


def algo_for(name: str, env_id: str, group_size: int = 8) -> AlgoConfig:
    """Preset `name` as the matrix resolves it on env_id (resolve_spec's algorithm)."""
    return resolve_spec(name, env_id, group_size).algo


def _custom_budgets() -> dict[str, int]:
    """Budgets for an env without a built-in entry: CartPole's."""
    return BUILTIN_ENVS["CartPole-v1"].budgets


MATRIX_KEYS = {
    "preset",
    "algos",
    "columns",
    "envs",
    "env_modules",
    "seeds",
    "seed_list",
    "steps",
    "group_sizes",
    "kl_coefs",
    "set",
}
ENV_KEYS = {"id", "kwargs", "steps"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list_of(kind):
    return lambda v: isinstance(v, list) and all(isinstance(x, kind) and not isinstance(x, bool) for x in v)


MATRIX_TYPES = {
    "preset": ("a string", lambda v: isinstance(v, str)),
    "algos": ("a list of names", _list_of(str)),
    "columns": ("a table of NAME = { algo = PRESET, FIELD = VALUE, ... }", lambda v: isinstance(v, dict)),
    "envs": ("a list of ids or [[envs]] tables", lambda v: isinstance(v, list)),
    "env_modules": ("a list of module names", _list_of(str)),
    "seeds": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "seed_list": ("a list of integers", _list_of(int)),
    "steps": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "group_sizes": ("a list of integers", _list_of(int)),
    "kl_coefs": ("a list of numbers", _list_of((int, float))),
    "set": ("a table of FIELD = VALUE or ALGO = { FIELD = VALUE }", lambda v: isinstance(v, dict)),
}
"""Matrix-file key → (what it must be, check)."""


def load_matrix_file(path: Path) -> dict[str, Any]:
    """A TOML matrix file as run options (keys as in MATRIX_KEYS); `envs` entries become EnvRequests."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise MatrixError(f"cannot read matrix file {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise MatrixError(f"matrix file {path} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - MATRIX_KEYS)
    if unknown:
        raise MatrixError(f"matrix file {path}: unknown key(s) {unknown}; allowed: {', '.join(sorted(MATRIX_KEYS))}")
    for key, value in data.items():
        expected, ok = MATRIX_TYPES[key]
        if not ok(value):
            raise MatrixError(f"matrix file {path}: {key} = {value!r} must be {expected}")
    if "envs" in data:
        requests = []
        for item in data["envs"]:
            item = {"id": item} if isinstance(item, str) else item
            bad = sorted(set(item) - ENV_KEYS) if isinstance(item, dict) else ["(not a table)"]
            if bad or "id" not in item:
                raise MatrixError(f"matrix file {path}: env entry {item!r} needs `id` and allows {sorted(ENV_KEYS)}")
            if not isinstance(item["id"], str) or not isinstance(item.get("kwargs", {}), dict):
                raise MatrixError(f"matrix file {path}: env entry {item!r} needs a string id and a table of kwargs")
            requests.append(EnvRequest(item["id"], dict(item.get("kwargs", {})), item.get("steps")))
        data["envs"] = requests
    if "set" in data:
        data["set"] = list(_flatten(data["set"]))
    if "columns" in data:
        data["algos"] = data.get("algos", []) + [_named_column(path, n, t) for n, t in data.pop("columns").items()]
    return data


def _named_column(path: Path, name: str, table: Any) -> ColumnRequest:
    """`[columns.NAME]` with `algo = PRESET` and settings → a column request carrying the user's name."""
    if not isinstance(table, dict) or not isinstance(table.get("algo"), str):
        raise MatrixError(f"matrix file {path}: columns.{name} needs algo = PRESET (and optional FIELD = VALUE)")
    settings = tuple(parse_set(f"{k}={v}") if isinstance(v, str) else (k, v) for k, v in table.items() if k != "algo")
    return ColumnRequest(table["algo"], settings, name)


def _flatten(table: dict[str, Any], prefix: str = ""):
    """{"grpo": {"kl_coef": 0}} or {"grpo.kl_coef": 0} → ("grpo.kl_coef", 0)."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
