"""`dapo`: GRPO with the asymmetric clip 0.2/0.28, no KL term, per-token loss (Yu et al. 2025)."""

from rlbench.algos.config import group_preset

PRESET = group_preset("dapo", clip=0.2, clip_high=0.28, kl_coef=0.0, loss_agg="token")
