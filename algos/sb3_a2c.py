"""`sb3_a2c`: Stable-Baselines3's A2C with its defaults, on 8 envs (a reference column, in no claim)."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="sb3_a2c",
    trainer="sb3_a2c",
    advantage="gae",
    policy_loss="pg",
    clip=None,
    n_steps=5,
    gae_lambda=1.0,
    epochs=1,
    minibatches=1,
    norm_adv=False,
    lr=7e-4,
    anneal_lr=False,
    vf_coef=1.0,
)
"""SB3 A2C's defaults in rlbench's terms: n_steps 5, λ = 1, one step per batch, no advantage normalization, a
constant lr 7e-4 (RMSprop), vf_coef 0.5 on SB3's plain MSE = 1.0 on rlbench's ½·MSE. n_envs is not an A2C
setting: 8, as every rlbench column (and the RL Zoo's CartPole A2C)."""
