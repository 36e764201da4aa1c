"""rlbench: a benchmark of policy-gradient RL. `rlbench.run(...)` runs a matrix, `rlbench.load(path)` opens a sweep
(rlbench.api, imported on first use so that `import rlbench` stays cheap)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlbench.api import SweepResults, load, run

__all__ = ["SweepResults", "load", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rlbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'rlbench' has no attribute {name!r}")
