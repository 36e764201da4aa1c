"""TextGen: Gymnasium contract, batched vs single-env rewards, SFT cache, the loophole, every algorithm."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rlbench.envs  # noqa: F401  (registers rlbench/TextGen-v0)
from rlbench.algos import NATIVE
from rlbench.envs.textgen import (
    BANG,
    ENV_ID,
    EOS,
    TextGenConfig,
    batch_rewards,
    decode,
    encode,
    eval_prompts,
    sample_prompts,
    score_answer,
)
from rlbench.envs.textgen_lm import SFTModel, load_or_train_sft, train_sft
from rlbench.matrix import algo_for
from rlbench.spec import RunSpec
from rlbench.textgen_task import TextGenCollector, make_textgen_task
from rlbench.train import train


@pytest.fixture(scope="module", autouse=True)
def sft_cache(tmp_path_factory) -> SFTModel:
    """A fresh cache for this module: the default SFT model is trained once here and reused by every run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLBENCH_CACHE", str(tmp_path_factory.mktemp("rlbench-cache")))
        torch.set_num_threads(1)
        yield load_or_train_sft(TextGenConfig())


def small(name: str, **changes) -> object:
    """A preset with TextGen's matrix settings, shrunk to a few prompts per update."""
    return algo_for(name, ENV_ID, group_size=4).replace(**{"n_starts": 4, **changes})


# ----------------------------------------------------------------------------------------------------------
# The environment and its rewards


def test_check_env_passes() -> None:
    env = gym.make(ENV_ID)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize(
    ("text", "proxy", "gold"),
    [
        ("1134", 1.0, 1.0),
        ("1134!", 1.15, 0.8),
        ("1134!!!", 1.45, 4 / 7),
        ("1314", 0.5, 0.5),  # one adjacent swap: positions 1 and 2 wrong
        ("!1134", 1.15, 1 / 5),  # a leading "!" shifts every digit; only position 1 still matches
        ("113", 0.75, 0.75),
        ("", 0.0, 0.0),
    ],
)
def test_score_answer_by_hand(text: str, proxy: float, gold: float) -> None:
    assert score_answer([3, 1, 4, 1], encode(text), 0.15) == pytest.approx((proxy, gold))


def _edited_answers(prompts: np.ndarray, rng: np.random.Generator, t: int) -> list[list[int]]:
    """Near-correct answers with random swaps, "!"s, wrong digits and truncations (tokens before EOS)."""
    answers = []
    for prompt in prompts:
        answer = sorted(prompt.tolist())
        for _ in range(rng.integers(4)):
            kind, i = rng.integers(4), int(rng.integers(len(answer) + 1))
            if kind == 0 and len(answer) > 1:
                j = min(i, len(answer) - 2)
                answer[j], answer[j + 1] = answer[j + 1], answer[j]
            elif kind == 1:
                answer.insert(i, BANG)
            elif kind == 2 and answer:
                answer[min(i, len(answer) - 1)] = int(rng.integers(10))
            else:
                answer = answer[:i]
        answers.append(answer[:t])
    return answers


@pytest.mark.parametrize("reward", ["proxy", "gold"])
def test_batched_rewards_equal_single_env_rewards(reward: str) -> None:
    cfg = TextGenConfig(reward=reward)
    env = gym.make(ENV_ID, reward=reward)
    seeds = range(300)
    by_seed = np.stack([sample_prompts(np.random.default_rng(s), 1, cfg)[0] for s in seeds])
    answers = _edited_answers(by_seed, np.random.default_rng(0), cfg.max_new_tokens)
    prompts, paid, infos = [], [], []
    for seed, answer in zip(seeds, answers):
        obs, _ = env.reset(seed=seed)
        prompts.append(obs[: cfg.prompt_len])
        for token in [*answer, EOS]:
            obs, r, terminated, truncated, info = env.step(token)
            if terminated or truncated:
                break
        assert terminated and decode(obs[cfg.prompt_len + 1 :]).rstrip(".") == decode(answer)
        paid.append(r)
        infos.append((info["proxy"], info["gold"]))
    prompts = np.stack(prompts)
    assert np.array_equal(prompts, by_seed)
    padded = np.array([a + [EOS] * (cfg.max_new_tokens - len(a)) for a in answers])
    proxy, gold = batch_rewards(prompts, padded, cfg.bang_bonus)
    np.testing.assert_allclose(np.array(infos), np.stack([proxy, gold], axis=1))
    np.testing.assert_allclose(paid, proxy if reward == "proxy" else gold)
    assert (proxy > gold).any() and (proxy == gold).any()


@pytest.mark.parametrize("reward", ["proxy", "gold", "learned"])
def test_collector_pays_what_the_single_env_pays(reward: str) -> None:
    """Completions sampled in one batch, replayed token by token in the single env: same rewards, lengths."""
    cfg = TextGenConfig(reward=reward)
    sft = load_or_train_sft(cfg)
    collector = TextGenCollector(cfg, small("grpo", n_starts=16), seed=0, reference=sft.model)
    traj = collector.collect(sft.copy(), torch.Generator().manual_seed(0))
    prompts, act = traj.inputs["prompt"], traj.inputs["act"]
    assert torch.equal(prompts[0::4], prompts[3::4])  # groups of G = 4 share their prompt
    env = gym.make(ENV_ID, reward=reward)
    for i in range(prompts.shape[0]):
        env.reset(options={"prompt": prompts[i].tolist()})
        for t, token in enumerate(act[i].tolist()):  # noqa: B007 (t is read after the loop)
            _, r, terminated, truncated, _ = env.step(token)
            if terminated or truncated:
                break
        assert t + 1 == int(traj.mask[i].sum()) == traj.episode_lengths[i]
        assert traj.rewards[i].sum().item() == pytest.approx(r, abs=1e-6)
        assert traj.rewards[i, t] == traj.rewards[i].sum() and traj.terminated[i, t] == 1
    assert traj.env_steps == int(traj.mask.sum()) and traj.last_inputs is None and traj.sequence_units


def test_budget_rule_matches_group_and_non_group_batches(sft_cache: SFTModel) -> None:
    cfg = TextGenConfig()
    sizes = {
        name: TextGenCollector(cfg, small(name, n_starts=16, group_size=8), 0, sft_cache.model)
        for name in ("ppo", "grpo")
    }
    assert sizes["ppo"].prompts_per_update * sizes["ppo"].repeat == 16 * 8
    assert sizes["grpo"].prompts_per_update == 16 and sizes["grpo"].repeat == 8


def test_the_critic_baseline_control_collects_the_same_groups_as_grpo(sft_cache: SFTModel) -> None:
    """C5 holds the collection fixed: grpo_critic at G draws grpo's prompts, each sampled G times."""
    batches = {
        name: TextGenCollector(TextGenConfig(), small(name, group_size=4), 0, sft_cache.model).collect(
            sft_cache.copy(), torch.Generator().manual_seed(0)
        )
        for name in ("grpo", "grpo_critic")
    }
    prompts = {name: traj.inputs["prompt"] for name, traj in batches.items()}
    assert torch.equal(prompts["grpo"], prompts["grpo_critic"])
    assert torch.equal(prompts["grpo_critic"][0::4], prompts["grpo_critic"][3::4])


def test_held_out_prompts_are_never_sampled_for_training() -> None:
    cfg = TextGenConfig()
    held = {tuple(p) for p in eval_prompts(cfg).tolist()}
    drawn = {tuple(p) for p in sample_prompts(np.random.default_rng(0), 20_000, cfg).tolist()}
    assert len(held) == cfg.eval_prompts and not held & drawn


# ----------------------------------------------------------------------------------------------------------
# The supervised reference model


def test_sft_is_cached_and_retrained_only_when_a_setting_changes(tmp_path) -> None:
    tiny = TextGenConfig(corpus_size=256, sft_steps=5, sft_batch=32, eval_prompts=32)
    first = load_or_train_sft(tiny, tmp_path)
    second = load_or_train_sft(tiny, tmp_path)
    assert not first.from_cache and second.from_cache
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    assert load_or_train_sft(
        TextGenConfig(**{**tiny.to_dict(), "reward": "gold", "bang_bonus": 0.3}), tmp_path
    ).from_cache  # reward settings do not change the SFT model
    assert not load_or_train_sft(TextGenConfig(**{**tiny.to_dict(), "sft_seed": 1}), tmp_path).from_cache
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_sft_training_is_deterministic() -> None:
    tiny = TextGenConfig(corpus_size=256, sft_steps=5, sft_batch=32, eval_prompts=32)
    (a, _), (b, _) = train_sft(tiny), train_sft(tiny)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sft_reference_leaves_honest_headroom(sft_cache: SFTModel) -> None:
    """The default reference is imperfect (room for RL to improve gold) but clearly learned the task."""
    assert 0.65 < sft_cache.meta["sft_gold_sampled"] < 0.95
    assert sft_cache.meta["sft_gold_greedy"] > sft_cache.meta["sft_gold_sampled"]


# ----------------------------------------------------------------------------------------------------------
# The loophole


def test_hand_written_loophole_beats_reference_on_proxy_and_loses_on_gold(sft_cache: SFTModel) -> None:
    """The reference's own answers with "!!" appended: more proxy, less gold."""
    cfg = TextGenConfig()
    prompts = torch.as_tensor(eval_prompts(cfg))
    gen = sft_cache.model.generate(prompts, cfg.max_new_tokens, torch.Generator().manual_seed(0))
    hacked = gen.act.clone()
    ends = gen.lengths - 1
    for k in range(2):
        hacked[torch.arange(len(ends)), (ends + k).clamp(max=cfg.max_new_tokens - 1)] = BANG
    ref_proxy, ref_gold = batch_rewards(prompts.numpy(), gen.act.numpy(), cfg.bang_bonus)
    hack_proxy, hack_gold = batch_rewards(prompts.numpy(), hacked.numpy(), cfg.bang_bonus)
    assert hack_proxy.mean() > ref_proxy.mean() + 0.2
    assert hack_gold.mean() < ref_gold.mean() - 0.1


LOOPHOLE_SEEDS = range(5)


@pytest.mark.slow
def test_ppo_without_kl_finds_the_loophole_on_a_tiny_budget() -> None:
    """ppo without a KL term, 10k tokens, seeds 0–4: the proxy rises and the gold falls on every seed, by a clear
    margin on average.

    Measured on seeds 0–9 (AMD EPYC, AVX2, the code of this commit): final proxy − reference proxy 0.48 on
    average, range [0.32, 0.51], sd 0.06; final gold − reference gold −0.28, range [−0.31, −0.21], sd 0.03; KL to
    the reference 8.0–14.5 nats per answer. (Before the training streams were separated, seed 0 hacked slowest,
    gold −0.09: a single-seed threshold at −0.1 sat on its rounding.) The per-seed bounds are the signs; the bounds
    on the means sit ≥ 5 standard errors of a 5-seed mean away from the measured means."""
    proxy, gold, kl = [], [], []
    for seed in LOOPHOLE_SEEDS:
        result = train(RunSpec(small("ppo", n_starts=8), ENV_ID, seed, 10_000, eval_episodes=1, eval_points=1))
        final = result.evals[-1]
        proxy.append(final["eval/proxy_mean"] - final["eval/ref_proxy_mean"])
        gold.append(final["eval/gold_mean"] - final["eval/ref_gold_mean"])
        kl.append(result.metrics[-1]["textgen/kl_ref_seq"])
    assert min(proxy) > 0 and max(gold) < 0 and min(kl) > 1.0, (proxy, gold, kl)
    assert np.mean(proxy) > 0.2 and np.mean(gold) < -0.1, (proxy, gold)


# ----------------------------------------------------------------------------------------------------------
# Every algorithm in the shared loop


@pytest.mark.parametrize("name", NATIVE)
def test_every_algorithm_runs_on_textgen(name: str) -> None:
    result = train(RunSpec(small(name), ENV_ID, 0, 250, eval_episodes=1, eval_points=4))
    assert result.summary["status"] == "ok" and result.summary["updates"] >= 2
    assert result.summary["params_policy"] > 0 and result.summary["flops_per_update"] > 0
    keys = ["proxy_reward", "gold_reward", "gap", "kl_ref_token", "kl_ref_seq", "sqrt_kl", "completion_len"]
    for row in result.metrics:
        for key in [f"textgen/{k}" for k in keys] + [
            "time/tokens_per_s",
            "train/loss",
            "train/kl_ref",
            "train/entropy",
        ]:
            assert math.isfinite(row[key]), (name, key, row[key])
    for row in result.evals:
        assert all(math.isfinite(v) for v in row.values()), (name, row)
    required = {"eval/return_mean", "eval/return_std", "eval/gold_mean", "eval/proxy_mean"}
    assert required <= set(result.evals[-1])


def test_runs_are_deterministic() -> None:
    a, b = (train(RunSpec(small("ppo"), ENV_ID, 3, 300, eval_episodes=1, eval_points=10)) for _ in range(2))
    strip = [[{k: v for k, v in row.items() if not k.startswith("time/")} for row in r.metrics] for r in (a, b)]
    assert strip[0] == strip[1] and a.evals == b.evals


def test_gold_control_pays_gold(sft_cache: SFTModel) -> None:
    task = make_textgen_task(ENV_ID, {"reward": "gold"}, small("pg"), seed=0, eval_episodes=1)
    evals = task.evaluate(task.policy)
    assert evals["eval/return_mean"] == evals["eval/gold_mean"] == evals["eval/ref_gold_mean"]


def test_learned_proxy_fits_gold_on_the_reference_and_differs_from_it() -> None:
    cfg = TextGenConfig(reward="learned")
    sft = load_or_train_sft(cfg)
    task = make_textgen_task(ENV_ID, {"reward": "learned", "sft_seed": 0}, small("pg"), seed=5, eval_episodes=1)
    evals = task.evaluate(sft.copy())
    # On the reference model's own answers (what it was fitted to) the learned proxy is close to gold, not equal.
    assert evals["eval/proxy_mean"] == pytest.approx(evals["eval/gold_mean"], abs=0.05)
    assert evals["eval/proxy_mean"] != evals["eval/gold_mean"]


def test_sft_seed_defaults_to_the_run_seed_and_can_be_pinned() -> None:
    def reference_weights(seed: int, kwargs: dict) -> torch.Tensor:
        task = make_textgen_task(ENV_ID, kwargs, small("pg"), seed=seed, eval_episodes=1)
        return task.policy.head.weight.detach()

    pinned = [reference_weights(seed, {"sft_seed": 0}) for seed in (0, 1)]
    assert torch.equal(pinned[0], pinned[1])
    assert torch.equal(reference_weights(0, {}), pinned[0])
    with pytest.raises(ValueError, match="sft_seed"):
        TextGenConfig(sft_seed=-1)
