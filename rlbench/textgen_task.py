"""TextGen in the shared training loop: the task builder, the batched collector and the evaluator.

Budget rule (issue 3, "groups"): an update generates `n_starts × group_size` completions for a grouped algorithm
(`AlgoConfig.grouped`: GRPO's family and its critic-baseline control; n_starts prompts, each sampled G times, rows
j·G … j·G+G−1 sharing prompt j), as the Gymnasium collector repeats each start seed G times, and
`n_starts × SEQS_PER_PROMPT` completions of distinct prompts for every other algorithm, so the others see exactly
GRPO-G8's batch size. Every run has the same budget of env steps = generated tokens (EOS included); `collect`,
`n_envs` and `n_steps` are not used on TextGen, since every completion is one whole episode that ends terminally
(last_inputs = None).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rlbench import stacked_lm
from rlbench.algos.config import AlgoConfig
from rlbench.envs.textgen import TextGenConfig, batch_rewards, eval_prompts, sample_prompts
from rlbench.envs.textgen_lm import Generation, GRUTrunk, TokenLM, load_or_train_sft
from rlbench.envs.textgen_rm import RewardModel, load_or_train_reward_model
from rlbench.rng import np_stream
from rlbench.rollout import Trajectories
from rlbench.task import Task

SEQS_PER_PROMPT = 8
"""Completions per update per n_starts for non-group algorithms: GRPO's default G (algos.config.group_preset)."""
EVAL_SEED = 3
"""Seeds the sampled completions of every evaluation (the same draws for every run and update)."""


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


def learned_proxy(cfg: TextGenConfig) -> RewardModel | None:
    """The (cached) reward model of cfg's SFT seed when the learner is paid a learned proxy, else None."""
    return load_or_train_reward_model(cfg) if cfg.reward == "learned" else None


def kl_per_token(gen: Generation, ref_logp_all: Tensor) -> Tensor:
    """Exact KL(π(·|s_t) ‖ π_ref(·|s_t)) = Σ_a π(a|s_t)(log π − log π_ref) at every position, [N, T]."""
    return (gen.logp_all.exp() * (gen.logp_all - ref_logp_all)).sum(-1)


def reference_log_probs(reference: TokenLM, prompts: np.ndarray, gen: Generation) -> Tensor:
    """log π_ref(·|s_t) of the reference at every completion position of `gen`, [N, T, A] (no gradient)."""
    with torch.no_grad():
        return reference.log_probs(torch.as_tensor(prompts), gen.act)


def sequence_metrics(
    prompts: np.ndarray,
    gen: Generation,
    ref_logp_all: Tensor,
    cfg: TextGenConfig,
    reward_model: RewardModel | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(proxy [N], gold [N], summary) of a batch of completions; KL is to the reference over the whole answer
    (`ref_logp_all`: reference_log_probs). The proxy is the learned reward model's score when there is one
    (reward="learned"), else the hand-built one.

    kl_ref_seq = E_x[Σ_t KL_t] (KL between the answer distributions given the prompt, by the chain rule),
    kl_ref_token = Σ KL_t / Σ valid tokens, sqrt_kl = √kl_ref_seq (Gao et al.'s d).
    """
    proxy, gold = batch_rewards(prompts, gen.act.numpy(), cfg.bang_bonus)
    with torch.no_grad():
        if reward_model is not None:
            proxy = reward_model(torch.as_tensor(prompts), gen.act, gen.lengths).double().numpy()
    kl = kl_per_token(gen, ref_logp_all) * gen.mask
    kl_seq = float(kl.sum(1).mean())
    summary = {
        "proxy_reward": float(proxy.mean()),
        "gold_reward": float(gold.mean()),
        "gap": float((proxy - gold).mean()),
        "kl_ref_token": float(kl.sum() / gen.mask.sum()),
        "kl_ref_seq": kl_seq,
        "sqrt_kl": kl_seq**0.5,
        "completion_len": float(gen.mask.sum(1).mean()),
    }
    return proxy, gold, summary


class TextGenCollector:
    """Samples one update's completions with the current policy in one batched forward per token.

    Episode returns (hence `rollout/ep_rew_mean`) are the reward the learner is paid: the proxy, or gold in the
    control condition. The evaluation return is always gold (make_evaluator).
    """

    def __init__(
        self,
        cfg: TextGenConfig,
        algo: AlgoConfig,
        seed: int,
        reference: TokenLM,
    ) -> None:
        self.cfg, self.reference = cfg, reference
        self.reward_model = learned_proxy(cfg)
        self.rng = np_stream(seed, "prompts")
        self.repeat = algo.group_size if algo.grouped else 1
        self.prompts_per_update = algo.n_starts if algo.grouped else algo.n_starts * SEQS_PER_PROMPT

    def collect(self, policy: TokenLM, generator: torch.Generator, budget: int | None = None) -> Trajectories | None:
        """One update's completions; with `budget`, only the leading whole groups (whole completions for a
        non-group algorithm) whose tokens fit in it are kept, or None when none fits. A completion's reward
        arrives at its last token, so a cut one would carry no outcome; rows past the budget are discarded."""
        prompts = self.draw_prompts()
        start = time.perf_counter()
        gen = policy.generate(torch.as_tensor(prompts), self.cfg.max_new_tokens, generator)
        return self.trajectories(prompts, gen, time.perf_counter() - start, budget)

    @staticmethod
    def collect_together(
        collectors: list[TextGenCollector],
        policies: list[TokenLM],
        generators: list[torch.Generator],
        budgets: list[int | None],
    ) -> list[Trajectories | None]:
        """collectors[k].collect(policies[k], generators[k], budgets[k]) for every seed k of a batch (one matrix
        cell), all completions generated together (rlbench.stacked_lm.generate: the same tokens as each seed's
        own generate); time/tokens_per_s counts each seed's share of the generation time."""
        prompts = [collector.draw_prompts() for collector in collectors]
        start = time.perf_counter()
        steps = collectors[0].cfg.max_new_tokens
        gens = stacked_lm.generate(policies, torch.as_tensor(np.stack(prompts)), steps, generators)
        share = (time.perf_counter() - start) / len(collectors)
        return [c.trajectories(p, g, share, b) for c, p, g, b in zip(collectors, prompts, gens, budgets)]

    def draw_prompts(self) -> np.ndarray:
        """The next update's prompt rows, each of a group's prompts repeated `repeat` times."""
        return np.repeat(sample_prompts(self.rng, self.prompts_per_update, self.cfg), self.repeat, axis=0)

    def trajectories(
        self, prompts: np.ndarray, gen: Generation, seconds: float, budget: int | None
    ) -> Trajectories | None:
        """The update's batch from the completions `gen` of `prompts`, generated in `seconds` (collect)."""
        tokens_per_s = float(gen.mask.sum()) / seconds
        rows = self.rows_within(gen.lengths, budget)
        if rows == 0:
            return None
        prompts, gen = prompts[:rows], Generation(gen.act[:rows], gen.mask[:rows], gen.logp_all[:rows])
        start = time.perf_counter()
        ref_logp_all = reference_log_probs(self.reference, prompts, gen)
        reference_s = time.perf_counter() - start
        proxy, gold, summary = sequence_metrics(prompts, gen, ref_logp_all, self.cfg, self.reward_model)
        paid = torch.as_tensor(gold if self.cfg.reward == "gold" else proxy, dtype=torch.float32)
        last = torch.nn.functional.one_hot(gen.lengths - 1, gen.mask.shape[1]).float()
        extra = {f"textgen/{k}": v for k, v in summary.items()}
        extra["time/tokens_per_s"] = tokens_per_s
        return Trajectories(
            inputs={"prompt": torch.as_tensor(prompts), "act": gen.act},
            rewards=last * paid[:, None],
            terminated=last,
            ends=torch.maximum(last, 1.0 - gen.mask),
            mask=gen.mask,
            last_inputs=None,
            episode_returns=paid.tolist(),
            episode_lengths=gen.lengths.tolist(),
            sequence_units=True,
            extra=extra,
            reference_logp=ref_logp_all.gather(-1, gen.act.unsqueeze(-1)).squeeze(-1),
            reference_s=reference_s,
        )

    def rows_within(self, lengths: Tensor, budget: int | None) -> int:
        """How many leading rows form whole groups (of `repeat` rows) whose tokens total at most `budget`."""
        if budget is None:
            return len(lengths)
        group_tokens = lengths.reshape(-1, self.repeat).sum(dim=1).cumsum(dim=0)
        return int((group_tokens <= budget).sum()) * self.repeat

    def close(self) -> None:
        """Nothing to release: the collector holds no environment processes."""


def make_evaluator(cfg: TextGenConfig, reference: TokenLM):
    """evaluate(policy) → eval/* metrics of sampled completions on the held-out prompts.

    eval/return_* is the gold reward (the task's true score, whatever the learner is paid), so final returns,
    curves and AUC rank algorithms by what they achieve, not by how far they hacked the proxy; the proxy and
    the gap keep their own columns. eval/ref_* are the reference (SFT) model's scores on the same prompts and
    draws, for comparison.
    """
    prompts = eval_prompts(cfg)
    reward_model = learned_proxy(cfg)

    def score(model: TokenLM) -> tuple[np.ndarray, dict[str, float]]:
        generator = torch.Generator().manual_seed(EVAL_SEED)
        gen = model.generate(torch.as_tensor(prompts), cfg.max_new_tokens, generator)
        _, gold, summary = sequence_metrics(
            prompts, gen, reference_log_probs(reference, prompts, gen), cfg, reward_model
        )
        return gold, summary

    _, ref = score(reference)

    def evaluate(policy: TokenLM) -> dict[str, float]:
        gold, summary = score(policy)
        return {
            "eval/return_mean": float(gold.mean()),
            "eval/return_std": float(gold.std()),
            "eval/proxy_mean": summary["proxy_reward"],
            "eval/gold_mean": summary["gold_reward"],
            "eval/gap": summary["gap"],
            "eval/kl_ref_seq": summary["kl_ref_seq"],
            "eval/completion_len": summary["completion_len"],
            "eval/ref_proxy_mean": ref["proxy_reward"],
            "eval/ref_gold_mean": ref["gold_reward"],
        }

    return evaluate


def make_textgen_task(env_id: str, env_kwargs: dict[str, Any], cfg: AlgoConfig, seed: int, eval_episodes: int) -> Task:
    """Policy = a trainable copy of the (cached) SFT model of sft_seed (default: the run's seed); critic = its
    trunk with a value head if needed.

    `eval_episodes` is not used: every evaluation samples one completion for each of the cfg.eval_prompts
    held-out prompts, which costs milliseconds.
    """
    text_cfg = TextGenConfig(**env_kwargs).pinned(seed)
    sft = load_or_train_sft(text_cfg)
    policy = sft.copy()
    critic = ValueModel(sft.model) if cfg.uses_critic else None
    return Task(
        policy=policy,
        critic=critic,
        collector=TextGenCollector(text_cfg, cfg, seed, sft.model),
        evaluate=make_evaluator(text_cfg, sft.model),
    )
