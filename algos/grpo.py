"""`grpo`: no critic; G episodes per start state, each step gets its episode's group z-score; clip + KL (k3)."""

from rlbench.algos.config import group_preset

PRESET = group_preset("grpo", loss_agg="sequence")
