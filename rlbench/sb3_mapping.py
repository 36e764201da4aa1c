"""rlbench's AlgoConfig in Stable-Baselines3's terms: the one mapping `rlbench bench sb3` and the `sb3_ppo` and
`sb3_a2c` matrix columns use, and what SB3 cannot run. Pure: SB3 is never imported here.

Mapping (rlbench → SB3): n_envs (DummyVecEnv + Monitor over gym.make envs), n_steps, gamma, gae_lambda, clip →
clip_range, ent_coef, max_grad_norm, norm_adv → normalize_advantage, epochs → n_epochs, batch_size = n_envs·n_steps
/ minibatches (PPO), separate pi/vf MLPs [hidden, hidden] with Tanh and orthogonal init (gains √2 / 0.01 / 1);
PPO's optimizer is Adam (eps 1e-5), A2C's RMSprop (SB3's default).

Where the two still differ (deliberately aligned ones marked *):
- * Value loss: rlbench uses ½·MSE (CleanRL), SB3 plain MSE, so SB3 gets vf_coef/2 for the same objective.
- * LR annealing: rlbench decays with the progress *before* each update (first update at full lr), SB3 with
  the progress *after* the rollout; SB3's schedule is shifted by one rollout to match.
- Work rlbench does every update that SB3 does not: gradient-noise measurement (noise_splits extra
  forward/backward passes), a frozen-reference forward for kl_ref, per-minibatch metric syncs; FLOP counting
  on the first update.
- Envs: rlbench steps CartPole through Gymnasium's vector entry point (NEXT_STEP autoreset; the reset step is
  not counted, so a rollout has ≤ n_envs·n_steps env steps); SB3 uses same-step autoreset, exactly
  n_envs·n_steps per rollout. Env steps therefore differ by less than one rollout.
- Advantage normalization: rlbench divides by the population std, SB3 by the sample std (Bessel).
- Truncation: rlbench bootstraps V(final obs) inside GAE, SB3 adds γ·V(final obs) to the last reward.
- Randomness: different RNG streams (torch Generator vs global torch/numpy), so equal seeds ≠ equal runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import torch

from rlbench import registry
from rlbench.algos.config import AlgoConfig

SB3_ALGOS: dict[str, Literal["PPO", "A2C"]] = {"sb3_ppo": "PPO", "sb3_a2c": "A2C"}
"""AlgoConfig.trainer → the Stable-Baselines3 class that trains it."""

EXTRA = "pip install 'rlbench[sb3]'"


def sb3_installed() -> bool:
    """Whether Stable-Baselines3 can be imported here."""
    return importlib.util.find_spec("stable_baselines3") is not None


def sb3_algo(cfg: AlgoConfig) -> Literal["PPO", "A2C"]:
    """The SB3 class of a column another library trains; ValueError for one rlbench trains."""
    if cfg.trainer not in SB3_ALGOS:
        raise ValueError(f"{cfg.name}: trainer {cfg.trainer!r} is not Stable-Baselines3; allowed: {list(SB3_ALGOS)}")
    return SB3_ALGOS[cfg.trainer]


def rollout_budget(cfg: AlgoConfig, steps: int) -> int:
    """SB3's total_timesteps for a budget of `steps`: whole rollouts only, so SB3 never trains past the budget
    (it may stop up to one rollout short of it; rlbench cuts its last batch at the budget instead)."""
    rollout = cfg.n_envs * cfg.n_steps
    return steps // rollout * rollout


def sb3_kwargs(cfg: AlgoConfig, total_steps: int, algo: Literal["PPO", "A2C"] = "PPO") -> dict[str, Any]:
    """Keyword arguments for `stable_baselines3.PPO` or `.A2C` equivalent to `cfg` over `total_steps` env
    steps; ValueError naming the settings SB3's `algo` has no equivalent of."""
    unsupported = {
        "advantage": cfg.advantage != "gae",
        "collect": cfg.collect != "steps",
        "clip_high": cfg.clip_high not in (None, cfg.clip),
        "kl_coef": cfg.kl_coef != 0.0,
        "value_epochs": cfg.value_epochs != 0,
    }
    if algo == "PPO":
        unsupported |= {
            "policy_loss": cfg.policy_loss != "clip",
            "clip": cfg.clip is None,
            "minibatches": (cfg.n_envs * cfg.n_steps) % cfg.minibatches != 0,
        }
    else:
        unsupported |= {
            "policy_loss": cfg.policy_loss != "pg",
            "clip": cfg.clip is not None,
            "epochs": cfg.epochs != 1,
            "minibatches": cfg.minibatches != 1,
        }
    bad = [name for name, flag in unsupported.items() if flag]
    if bad:
        raise ValueError(f"{cfg.name}: SB3's {algo} has no equivalent of {bad}")
    rollout = cfg.n_envs * cfg.n_steps

    def annealed(left: float) -> float:
        # SB3 passes the progress remaining *after* the rollout; add one rollout back to match rlbench.
        return cfg.lr * min(1.0, left + rollout / total_steps)

    lr: float | Callable[[float], float] = annealed if cfg.anneal_lr else cfg.lr
    kwargs: dict[str, Any] = dict(
        n_steps=cfg.n_steps,
        learning_rate=lr,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        normalize_advantage=cfg.norm_adv,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef / 2,  # rlbench's value loss is ½·MSE, SB3's is MSE
        max_grad_norm=cfg.max_grad_norm,
        policy_kwargs=dict(
            net_arch=dict(pi=[cfg.hidden] * 2, vf=[cfg.hidden] * 2),
            activation_fn=torch.nn.Tanh,
            share_features_extractor=False,
        ),
    )
    if algo == "PPO":
        kwargs |= dict(batch_size=rollout // cfg.minibatches, n_epochs=cfg.epochs, clip_range=cfg.clip)
    return kwargs


def check_sb3_column(cfg: AlgoConfig, env_id: str, env_kwargs: dict[str, Any], steps: int) -> None:
    """ValueError naming the column and what is allowed when SB3 cannot train `cfg` on env_id: SB3 missing, an env
    with rlbench's own task (TextGen), spaces other than a flat Box observation and Discrete/MultiDiscrete/Box
    actions, or settings without an SB3 equivalent."""
    if registry.task_builder(env_id) is not None:
        raise ValueError(
            f"{cfg.name} cannot run on {env_id}: Stable-Baselines3 columns train plain Gymnasium envs only "
            f"({env_id} needs rlbench's own task); allowed: classic envs or any registered Gymnasium id"
        )
    if not sb3_installed():
        raise ValueError(f"{cfg.name} needs Stable-Baselines3, which is not installed: {EXTRA}")
    sb3_kwargs(cfg, rollout_budget(cfg, steps) or 1, sb3_algo(cfg))
    env = gym.make(env_id, **env_kwargs)
    try:
        obs, act = env.observation_space, env.action_space
    finally:
        env.close()
    flat_obs = isinstance(obs, gym.spaces.Box) and len(obs.shape) == 1
    plain_act = isinstance(act, (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box))
    starts_at_zero = not isinstance(act, gym.spaces.Discrete) or act.start == 0
    if not (flat_obs and plain_act and starts_at_zero):
        raise ValueError(
            f"{cfg.name} cannot run on {env_id} (observations {obs}, actions {act}); allowed: a flat Box "
            "observation space and Discrete (from 0), MultiDiscrete or Box actions"
        )
