"""`ppo`: GAE advantages and the clipped surrogate, several epochs of minibatches (the AlgoConfig defaults)."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(name="ppo", advantage="gae", policy_loss="clip")
