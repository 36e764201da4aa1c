"""`grpo_critic`: `grpo`'s episodic groups, G, clip and KL with a learned critic baseline G_t − V(s) (C5 control)."""

from rlbench.algos.config import group_preset

PRESET = group_preset("grpo_critic", loss_agg="sequence", advantage="baseline")
