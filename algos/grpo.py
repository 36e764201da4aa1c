"""`grpo`: no critic; G episodes per start state, each step gets its episode's group z-score; clip + KL (k3)."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="grpo",
    advantage="group",
    policy_loss="clip",
    collect="episodes",
    n_envs=4,
    group_size=8,
    kl_coef=0.04,
    norm_adv=False,
    loss_agg="sequence",
)
