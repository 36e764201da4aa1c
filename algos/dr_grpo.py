"""`dr_grpo`: GRPO without the std division and with per-token loss aggregation (Liu et al. 2025, Dr. GRPO)."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="dr_grpo",
    advantage="group",
    policy_loss="clip",
    collect="episodes",
    n_envs=4,
    group_size=8,
    kl_coef=0.04,
    norm_adv=False,
    scale_rewards="none",
    loss_agg="token",
)
