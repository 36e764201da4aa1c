"""`ppo_kl`: PPO plus β·KL(π‖π_ref) to the frozen initial policy, added to the loss with the k3 estimator."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(name="ppo_kl", advantage="gae", policy_loss="clip", kl_coef=0.05)
