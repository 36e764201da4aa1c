"""`dr_grpo`: GRPO without the std division and with per-token loss aggregation (Liu et al. 2025, Dr. GRPO)."""

from rlbench.algos.config import group_preset

PRESET = group_preset("dr_grpo", scale_rewards="none", loss_agg="token")
