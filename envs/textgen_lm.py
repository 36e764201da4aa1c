"""TextGen's tiny language model (1-layer GRU), its value model, batched generation, and cached SFT training.

Sequence layout: the model reads `prompt (P tokens), SEP, answer[0], …, answer[T-2]`; its output after SEP and
after answer[t-1] is the distribution of answer[t]. So the [N, T] completion positions are the model's
outputs at sequence positions P … P+T−1, and state s_t = (prompt, answer[:t]).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rlbench.envs.textgen import (
    BANG,
    EOS,
    N_ACTIONS,
    SEP,
    VOCAB,
    TextGenConfig,
    batch_rewards,
    eval_prompts,
    sample_prompts,
)

CACHE_FORMAT = 1
"""Bump when the model or the training procedure changes, so old cache entries are not reused."""
SFT_FIELDS = (
    "prompt_len",
    "max_new_tokens",
    "swap_prob",
    "bang_prob",
    "corpus_size",
    "d_model",
    "sft_steps",
    "sft_batch",
    "sft_lr",
    "sft_seed",
    "eval_prompts",
)
"""The TextGenConfig fields the supervised model depends on (the cache key); reward settings are not."""
ACCURACY_SEED = 1
"""Seeds the sampled completions that measure the SFT model's gold accuracy."""


def _sequence(prompts: Tensor, act: Tensor) -> Tensor:
    """Model input [N, P + T]: prompt, SEP, act[:, :-1] (teacher forcing)."""
    sep = torch.full((prompts.shape[0], 1), SEP, dtype=torch.long)
    return torch.cat([prompts, sep, act[:, :-1]], dim=1)


class GRUTrunk(nn.Module):
    """Embedding → 1-layer GRU; `features(prompts, act)`: features of the states s_0 … s_{T-1}, [N, T, d]."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.gru = nn.GRU(d_model, d_model, batch_first=True)

    def features(self, prompts: Tensor, act: Tensor) -> Tensor:
        out, _ = self.gru(self.embed(_sequence(prompts, act)))
        return out[:, prompts.shape[1] :]


@dataclass
class Generation:
    """A batch of sampled completions: act [N, T] (EOS after the end), mask [N, T], logp_all [N, T, A]."""

    act: Tensor
    mask: Tensor
    logp_all: Tensor

    @property
    def lengths(self) -> Tensor:
        """Tokens generated per sequence, EOS included, [N]."""
        return self.mask.sum(dim=1).long()


class TokenLM(GRUTrunk):
    """π(token | prompt, answer so far): GRUTrunk → linear head over the N_ACTIONS generatable tokens."""

    def __init__(self, d_model: int) -> None:
        super().__init__(d_model)
        self.head = nn.Linear(d_model, N_ACTIONS)

    def log_probs(self, prompts: Tensor, act: Tensor) -> Tensor:
        """log π(· | s_t) for every completion position, [N, T, A]."""
        return torch.log_softmax(self.head(self.features(prompts, act)), dim=-1)

    def evaluate(self, units: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(log π(a_t|s_t), entropy of π(·|s_t)), both [N, T], from units["prompt"] [N, P], ["act"] [N, T]."""
        logp_all = self.log_probs(units["prompt"], units["act"])
        logp = logp_all.gather(-1, units["act"].unsqueeze(-1)).squeeze(-1)
        return logp, -(logp_all.exp() * logp_all).sum(-1)

    @torch.no_grad()
    def generate(self, prompts: Tensor, steps: int, generator: torch.Generator, greedy: bool = False) -> Generation:
        """Sample `steps` tokens for every prompt row [N, P] with one batched GRU step per token."""
        sep = torch.full((prompts.shape[0], 1), SEP, dtype=torch.long)
        out, h = self.gru(self.embed(torch.cat([prompts, sep], dim=1)))
        x = out[:, -1]
        done = torch.zeros(prompts.shape[0], dtype=torch.bool)
        acts, masks, logps = [], [], []
        for t in range(steps):
            logp = torch.log_softmax(self.head(x), dim=-1)
            if greedy:
                token = logp.argmax(dim=-1)
            else:
                token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            token = torch.where(done, EOS, token)
            acts.append(token)
            masks.append(~done)
            logps.append(logp)
            done = done | (token == EOS)
            if t + 1 < steps:
                out, h = self.gru(self.embed(token)[:, None], h)
                x = out[:, 0]
        return Generation(torch.stack(acts, 1), torch.stack(masks, 1).float(), torch.stack(logps, 1))


class ValueModel(GRUTrunk):
    """V(s_t): the SFT model's trunk (copied, trained separately) with a zero-initialised scalar head."""

    def __init__(self, lm: TokenLM) -> None:
        super().__init__(lm.embed.embedding_dim)
        self.embed.load_state_dict(lm.embed.state_dict())
        self.gru.load_state_dict(lm.gru.state_dict())
        self.head = nn.Linear(lm.embed.embedding_dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def value(self, inputs: dict[str, Tensor]) -> Tensor:
        """V(s_t) for every completion position, [N, T]."""
        return self.head(self.features(inputs["prompt"], inputs["act"])).squeeze(-1)


def demonstrations(cfg: TextGenConfig, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An imperfect demonstrator's (prompts [n, P], answers [n, T]): the sorted digits, one random adjacent
    pair swapped with prob. swap_prob, one "!" appended with prob. bang_prob, then EOS (EOS-padded to T)."""
    p, t = cfg.prompt_len, cfg.max_new_tokens
    prompts = sample_prompts(rng, n, cfg)
    answers = np.full((n, t), EOS, dtype=np.int64)
    answers[:, :p] = np.sort(prompts, axis=1)
    rows = np.flatnonzero(rng.random(n) < cfg.swap_prob)
    cols = rng.integers(p - 1, size=len(rows))
    answers[rows, cols], answers[rows, cols + 1] = answers[rows, cols + 1], answers[rows, cols].copy()
    bang = rng.random(n) < cfg.bang_prob
    if t > p:
        answers[bang, p] = BANG
    return prompts, answers


def _fresh_lm(cfg: TextGenConfig) -> TokenLM:
    """A TokenLM initialised from cfg.sft_seed without touching torch's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.sft_seed)
        return TokenLM(cfg.d_model)


def train_sft(cfg: TextGenConfig) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Supervised training on the demonstrations: cross-entropy over answer tokens up to and including EOS.

    Deterministic given cfg (own seeds, CPU; sft_seed None means 0). Returns (state_dict, metadata with timing
    and accuracy).
    """
    cfg = cfg.pinned()
    start = time.perf_counter()
    rng = np.random.default_rng([cfg.sft_seed, 7])
    prompts, answers = (torch.as_tensor(a) for a in demonstrations(cfg, rng, cfg.corpus_size))
    # Positions up to and including the first EOS are supervised; the rest is padding.
    is_eos = answers == EOS
    mask = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long() == 0).float()
    model = _fresh_lm(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.sft_lr)
    for _ in range(cfg.sft_steps):
        idx = torch.as_tensor(rng.integers(cfg.corpus_size, size=cfg.sft_batch))
        logp, _ = model.evaluate({"prompt": prompts[idx], "act": answers[idx]})
        loss = -(logp * mask[idx]).sum() / mask[idx].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    meta = {"sft_time_s": time.perf_counter() - start, "sft_final_loss": float(loss.detach())}
    meta.update(sft_accuracy(model, cfg))
    return model.state_dict(), meta


def sft_accuracy(model: TokenLM, cfg: TextGenConfig) -> dict[str, float]:
    """Gold reward of the model on the held-out prompts: sampled (temperature 1) and greedy."""
    prompts = torch.as_tensor(eval_prompts(cfg))
    out = {}
    for name, greedy in (("sampled", False), ("greedy", True)):
        generator = torch.Generator().manual_seed(ACCURACY_SEED)
        gen = model.generate(prompts, cfg.max_new_tokens, generator, greedy)
        _, gold = batch_rewards(prompts.numpy(), gen.act.numpy(), 0.0)
        out[f"sft_gold_{name}"] = float(gold.mean())
    return out


def cache_dir() -> Path:
    """$RLBENCH_CACHE, else ~/.cache/rlbench."""
    return Path(os.environ.get("RLBENCH_CACHE", Path.home() / ".cache" / "rlbench"))


def cache_key(cfg: TextGenConfig) -> str:
    """SHA-256 of everything the SFT model depends on: its settings, the cache format, torch's version."""
    blob = {name: getattr(cfg, name) for name in SFT_FIELDS}
    blob.update(format=CACHE_FORMAT, torch=torch.__version__)
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


@dataclass
class SFTModel:
    """The supervised reference model, its metadata, and whether it came from the cache."""

    model: TokenLM
    meta: dict[str, float]
    from_cache: bool

    def copy(self) -> TokenLM:
        """A trainable copy (the policy every algorithm starts from)."""
        return copy.deepcopy(self.model).requires_grad_(True)


def load_or_train_sft(cfg: TextGenConfig, directory: Path | None = None) -> SFTModel:
    """The SFT model for cfg from `directory` (default `cache_dir()`/textgen), trained and stored on a miss
    (`cached_training`). An unpinned cfg (sft_seed None) gets the model of SFT seed 0.
    """
    cfg = cfg.pinned()
    path = (directory or cache_dir() / "textgen") / f"sft-{cache_key(cfg)[:20]}.pt"
    model = _fresh_lm(cfg)
    state, meta, from_cache = cached_training(path, lambda: train_sft(cfg))
    model.load_state_dict(state)
    return SFTModel(model.requires_grad_(False), meta, from_cache=from_cache)


def cached_training(path: Path, train) -> tuple[dict, dict, bool]:
    """(state_dict, meta, loaded from the cache?) of the model stored at `path`; on a miss `train()` gives
    (state_dict, meta), which is written to a temporary name and renamed, so concurrent runs never read a
    partial file."""
    if path.exists():
        blob = torch.load(path, weights_only=True)
        return blob["state_dict"], blob["meta"], True
    state, meta = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"state_dict": state, "meta": meta}, tmp)
    os.replace(tmp, path)
    return state, meta, False
