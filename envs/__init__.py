"""rlbench's own environments, registered with Gymnasium on import, and the task builders for them."""

from __future__ import annotations

TASK_BUILDERS: dict[str, str] = {}
"""Env id → "module:function" building that env's Task (policy, critic, collector, evaluator); Gymnasium envs
without an entry use rlbench's MLP task."""
