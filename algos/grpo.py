"""`grpo`: no critic; G episodes per start, group z-scored; clip + β·k3 in the loss: follows ∇KL(π_ref‖π).

DeepSeekMath's KL term: k3 of each sampled step, averaged into the loss without an importance weight. Its
on-policy expected gradient is that of the per-step *forward* KL(π_ref‖π), not of KL(π‖π_ref) (rlbench kl-bias).
"""

from rlbench.algos.config import group_preset

PRESET = group_preset("grpo", loss_agg="sequence")
