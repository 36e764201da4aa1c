"""`pg_centred`: `pg` minus a constant baseline, the batch-mean return-to-go (the C1 control)."""

from rlbench.algos.config import AlgoConfig

PRESET = AlgoConfig(
    name="pg_centred",
    advantage="centred",
    policy_loss="pg",
    collect="episodes",
    epochs=1,
    minibatches=1,
    norm_adv=False,
    lr=1e-3,
)
