"""`ppo_noclip`: PPO's epochs of minibatches on the plain ratio objective −r·A, no clip (the C3 ablation)."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(name="ppo_noclip", advantage="gae", policy_loss="clip", clip=None)
