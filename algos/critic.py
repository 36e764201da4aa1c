"""`critic`: REINFORCE with a learned value baseline, A = G_t − V(s_t), V fitted by 30 passes per batch."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="critic",
    advantage="baseline",
    policy_loss="pg",
    collect="episodes",
    epochs=1,
    minibatches=1,
    norm_adv=False,
    lr=1e-3,
    value_epochs=30,
)
