"""rlbench's own environments, registered with Gymnasium on import, and the task builders for them."""

from __future__ import annotations

import gymnasium as gym

TASK_BUILDERS: dict[str, str] = {
    "rlbench/TextGen-v0": "rlbench.envs.textgen_task:make_textgen_task",
}
"""Env id → "module:function" building that env's Task (policy, critic, collector, evaluator); Gymnasium envs
without an entry use rlbench's MLP task."""

if "rlbench/TextGen-v0" not in gym.registry:
    gym.register("rlbench/TextGen-v0", entry_point="rlbench.envs.textgen:TextGenEnv", max_episode_steps=7)
