"""Facts about each built-in env, one entry per env: its family, budgets, algorithm settings, evaluation points,
reference score range and task builder. Envs without an entry are plain Gymnasium envs: the `classic` family,
CartPole's budgets (rlbench.matrix), rlbench's MLP task, a score range observed in the sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rlbench.envs import textgen


@dataclass(frozen=True)
class EnvEntry:
    """A built-in env."""

    id: str
    budgets: dict[str, int]
    """Env steps per run for each preset (the same for every algorithm)."""
    family: Literal["classic", "text"] = "classic"
    """`classic` (Gymnasium control tasks, `--envs classic`) or `text` (the TextGen sections of the report)."""
    algo_overrides: dict[str, Any] = field(default_factory=dict)
    """Settings applied to every algorithm on this env before the user's --set."""
    eval_points: int | None = None
    """Evaluations per run on this env, if not the preset's."""
    score_range: tuple[float, float] | None = None
    """(random-policy return, solved return) for normalized scores (0 = random, 1 = solved); None: the report
    uses the min and max final return observed in the sweep."""
    task_builder: str | None = None
    """"module:function" building this env's Task (policy, critic, collector, evaluator); None: rlbench's MLP task."""


BUILTIN_ENVS: dict[str, EnvEntry] = {
    e.id: e
    for e in (
        EnvEntry("CartPole-v1", {"smoke": 3_000, "quick": 150_000, "full": 500_000}, score_range=(22.0, 475.0)),
        EnvEntry("Acrobot-v1", {"smoke": 3_000, "quick": 100_000, "full": 500_000}, score_range=(-500.0, -100.0)),
        EnvEntry("MountainCar-v0", {"smoke": 3_000, "quick": 200_000, "full": 1_000_000}, score_range=(-200.0, -110.0)),
        EnvEntry("Pendulum-v1", {"smoke": 3_000, "quick": 200_000, "full": 1_000_000}, score_range=(-1200.0, -150.0)),
        EnvEntry(
            textgen.ENV_ID,
            textgen.BUDGETS,
            family="text",
            algo_overrides=textgen.ALGO_OVERRIDES,
            eval_points=textgen.EVAL_POINTS,
            task_builder="rlbench.textgen_task:make_textgen_task",
        ),
    )
}
"""Score ranges: random returns are the usual uniform-random policy values; solved = Gymnasium's reward_threshold
(Pendulum has none: -150, the RL Zoo target)."""


def is_text(env_id: str) -> bool:
    """Whether the env is of the `text` family (TextGen: gold and proxy reward, KL to the reference)."""
    entry = BUILTIN_ENVS.get(env_id)
    return entry is not None and entry.family == "text"


def task_builder(env_id: str) -> str | None:
    """The env's own "module:function" task builder, or None for rlbench's MLP task."""
    entry = BUILTIN_ENVS.get(env_id)
    return entry.task_builder if entry else None


def score_range(env_id: str) -> tuple[float, float] | None:
    """(random-policy return, solved return) of a built-in env, or None."""
    entry = BUILTIN_ENVS.get(env_id)
    return entry.score_range if entry else None
