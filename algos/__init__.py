"""Algorithm presets: every module here that defines `PRESET` (an AlgoConfig) is one named algorithm."""

from __future__ import annotations

import importlib
import pkgutil
import re

from rlbench.algos.config import AlgoConfig

LADDER: tuple[str, ...] = ("pg", "critic", "ppo", "ppo_kl", "grpo")
"""The five algorithms of the story, in the order the story tells them."""


def _discover() -> tuple[dict[str, AlgoConfig], dict[str, str]]:
    """Every module's PRESET and the first line of its docstring, the ladder first (in its order), then by name."""
    presets, descriptions = {}, {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        preset = getattr(module, "PRESET", None)
        if isinstance(preset, AlgoConfig):
            presets[preset.name] = preset
            descriptions[preset.name] = (module.__doc__ or "").strip().split("\n")[0]
    order = sorted(presets, key=lambda n: (LADDER.index(n) if n in LADDER else len(LADDER), n))
    return {n: presets[n] for n in order}, {n: descriptions[n] for n in order}


PRESETS, DESCRIPTIONS = _discover()
"""Name → preset, in the order `rlbench list` shows them (the ladder first, variants after)."""

NATIVE: tuple[str, ...] = tuple(name for name, preset in PRESETS.items() if preset.trainer == "rlbench")
"""Presets rlbench's own training loop trains; the others delegate training to another library (`trainer`)."""


def order_key(column: str) -> tuple[int, int, float, str]:
    """Sort key of a matrix column: presets in PRESETS order (the ladder first), a family's `-gG` columns by G,
    then its `-bβ` columns by β."""
    match = re.fullmatch(r"(.+?)(?:-g(\d+))?(?:-b([0-9.e+-]+))?", column)
    base, g, beta = match.group(1), int(match.group(2) or 0), float(match.group(3) or 0)
    names = list(PRESETS)
    return (names.index(base) if base in names else len(names), g, beta, column)


__all__ = ["AlgoConfig", "DESCRIPTIONS", "LADDER", "NATIVE", "PRESETS", "order_key"]
