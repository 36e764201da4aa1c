"""Named random streams derived from a run's seed (PureJaxRL style).

Every kind of random draw has its own stream, so consuming one (e.g. measuring gradient noise) never shifts
another (e.g. the actions sampled). The numbers are fixed: renumbering a stream changes every run's results.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS: dict[str, int] = {
    "env_starts": 1,
    "prompts": 3,
    "init": 4,
    "actions": 5,
    "minibatches": 6,
    "noise": 7,
    "sb3": 8,
}
"""Stream name → key: `env_starts` (reset seeds of Gymnasium envs), `prompts` (TextGen training prompts),
`init` (network initialisation), `actions` (sampled actions and tokens), `minibatches` (minibatch shuffles),
`noise` (the gradient-noise probe's splits, a measurement), `sb3` (the one seed a Stable-Baselines3 column gives
SB3, which draws everything from it)."""


def np_stream(seed: int, name: str) -> np.random.Generator:
    """The numpy generator of stream `name` of run `seed`: default_rng([seed, STREAMS[name]])."""
    return np.random.default_rng([seed, STREAMS[name]])


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream `name` of run `seed`, drawn from its numpy stream."""
    return int(np_stream(seed, name).integers(2**63))


def torch_stream(seed: int, name: str) -> torch.Generator:
    """A CPU torch generator seeded from stream `name` of run `seed`."""
    return torch.Generator().manual_seed(stream_seed(seed, name))
