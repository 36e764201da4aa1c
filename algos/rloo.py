"""`rloo`: GRPO's group sampling with a leave-one-out mean baseline and no std scaling (Ahmadian et al. 2024)."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="rloo",
    advantage="group",
    policy_loss="clip",
    collect="episodes",
    n_envs=4,
    group_size=8,
    kl_coef=0.04,
    norm_adv=False,
    group_baseline="loo",
    scale_rewards="none",
)
