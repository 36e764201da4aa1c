"""rlbench's own environments, registered with Gymnasium on import."""

from __future__ import annotations

import gymnasium as gym

if "rlbench/TextGen-v0" not in gym.registry:
    gym.register("rlbench/TextGen-v0", entry_point="rlbench.envs.textgen:TextGenEnv", max_episode_steps=7)
