"""`pg`: REINFORCE — whole episodes, raw discounted return-to-go, no baseline, one plain gradient step."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="pg",
    advantage="return",
    policy_loss="pg",
    collect="episodes",
    epochs=1,
    minibatches=1,
    norm_adv=False,
    lr=1e-3,
)
