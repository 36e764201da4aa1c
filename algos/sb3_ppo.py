"""`sb3_ppo`: Stable-Baselines3's PPO with `ppo`'s settings on each env (a reference column, in no claim)."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(name="sb3_ppo", trainer="sb3_ppo")
