"""`ppo_kl`: PPO + the RLHF-PPO KL penalty, −β·k1 per step in the reward: follows ∇KL(π‖π_ref) (rlbench kl-bias).

k1 = log π − log π_ref of each sampled step is subtracted (×β) from its reward before GAE (Ziegler et al. 2019,
TRL's PPOTrainer), so the return carries the KL of the rest of the trajectory and the score-function gradient
is that of β·KL(π‖π_ref) of the whole trajectory.
"""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="ppo_kl", advantage="gae", policy_loss="clip", kl_coef=0.05, kl_estimator="k1", kl_placement="reward"
)
