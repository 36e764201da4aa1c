"""TextGen's learned proxy (`reward="learned"`): a small reward model fitted to gold-labelled completions.

As in RLHF (and Gao et al. 2022, whose proxy reward models are fitted to a gold model's labels), the labels
are the gold reward of completions the reference (SFT) model samples for training prompts; the learner is then
paid the reward model's score, which is only trustworthy near what it was fitted on. Gold is unchanged. The
model is deterministic given the settings (its own seeds, CPU), takes seconds, and is cached next to the SFT
model it samples from.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import Tensor, nn

from rlbench.envs.textgen import SEP, VOCAB, TextGenConfig, batch_rewards, sample_prompts
from rlbench.envs.textgen_lm import cache_dir, cache_key, cached_training, load_or_train_sft

RM_SAMPLES = 4096
"""Labelled completions the reward model is fitted to (one sampled completion per training prompt drawn)."""
RM_STEPS = 300
"""Adam steps of reward-model training (batches of RM_BATCH, learning rate RM_LR)."""
RM_BATCH = 256
RM_LR = 3e-3
RM_FORMAT = 1
"""Bump when the reward model or its training changes, so old cache entries are not reused."""


class RewardModel(nn.Module):
    """r(prompt, answer): embedding → 1-layer GRU over `prompt, SEP, answer` → linear head on the state after
    the answer's last generated token (EOS included)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.gru = nn.GRU(d_model, d_model, batch_first=True)
        self.head = nn.Linear(d_model, 1)

    def forward(self, prompts: Tensor, act: Tensor, lengths: Tensor) -> Tensor:
        """Scores [N] of answers act [N, T] (lengths [N] tokens each) to prompts [N, P]."""
        sep = torch.full((prompts.shape[0], 1), SEP, dtype=torch.long)
        out, _ = self.gru(self.embed(torch.cat([prompts, sep, act], dim=1)))
        last = out[torch.arange(len(lengths)), prompts.shape[1] + lengths]
        return self.head(last).squeeze(-1)


def train_reward_model(cfg: TextGenConfig) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Fit a RewardModel by least squares to the gold reward of RM_SAMPLES completions of cfg's SFT model.
    Returns (state_dict, metadata: training loss, and its held-in and held-out (fresh samples) RMSE)."""
    cfg = cfg.pinned()
    sft = load_or_train_sft(cfg).model
    rng = np.random.default_rng([cfg.sft_seed, 11])
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))

    def labelled(n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        prompts = torch.as_tensor(sample_prompts(rng, n, cfg))
        gen = sft.generate(prompts, cfg.max_new_tokens, generator)
        _, gold = batch_rewards(prompts.numpy(), gen.act.numpy(), cfg.bang_bonus)
        return prompts, gen.act, gen.lengths, torch.as_tensor(gold, dtype=torch.float32)

    data, held_out = labelled(RM_SAMPLES), labelled(RM_SAMPLES // 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.sft_seed)
        model = RewardModel(cfg.d_model)
    optimizer = torch.optim.Adam(model.parameters(), lr=RM_LR)
    for _ in range(RM_STEPS):
        idx = torch.as_tensor(rng.integers(RM_SAMPLES, size=RM_BATCH))
        loss = ((model(*(x[idx] for x in data[:3])) - data[3][idx]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fit, new = (float(((model(*d[:3]) - d[3]) ** 2).mean().sqrt()) for d in (data, held_out))
    return model.state_dict(), {"rm_rmse_fit": fit, "rm_rmse_new": new, "rm_loss": float(loss.detach())}


def load_or_train_reward_model(cfg: TextGenConfig) -> RewardModel:
    """The reward model of cfg (its SFT seed pinned) from the cache, trained and stored on a miss; the key is the
    SFT model's cache key plus the reward model's settings."""
    cfg = cfg.pinned()
    key = json.dumps([cache_key(cfg), RM_SAMPLES, RM_STEPS, RM_BATCH, RM_LR, RM_FORMAT])
    path = cache_dir() / "textgen" / f"rm-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"
    model = RewardModel(cfg.d_model)
    state, _, _ = cached_training(path, lambda: train_reward_model(cfg))
    model.load_state_dict(state)
    return model.requires_grad_(False)
