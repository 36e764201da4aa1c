"""`rloo`: GRPO's group sampling with a leave-one-out mean baseline and no std scaling (Ahmadian et al. 2024)."""

from rlbench.algos.config import group_preset

PRESET = group_preset("rloo", group_baseline="loo", scale_rewards="none")
