"""The components an algorithm is made of, as one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_type_hints

Advantage = Literal["return", "centred", "baseline", "gae", "group"]
PolicyLoss = Literal["pg", "clip"]
Collect = Literal["steps", "episodes"]
ScaleRewards = Literal["group", "none"]
GroupBaseline = Literal["mean", "loo"]
LossAgg = Literal["token", "sequence"]
KLEstimator = Literal["k1", "k2", "k3"]
KLPlacement = Literal["loss", "reward"]
Trainer = Literal["rlbench", "sb3_ppo", "sb3_a2c"]


@dataclass(frozen=True)
class AlgoConfig:
    """An algorithm = advantage estimator + policy loss + optional critic + optional KL to a frozen reference.

    Defaults are PPO (CleanRL/SB3 implementation details, RL Zoo-sized steps); each preset in `rlbench.algos`
    states only how it differs.
    """

    name: str
    """Preset name shown in the matrix (e.g. `ppo`, `grpo-g4`)."""
    advantage: Advantage = "gae"
    """`return`: discounted return-to-go; `centred`: return-to-go − its batch mean; `baseline`: return-to-go − V(s);
    `gae`: GAE(γ, λ); `group`: group z-score."""
    policy_loss: PolicyLoss = "clip"
    """`pg`: −logπ(a|s)·A; `clip`: PPO's clipped surrogate (Schulman et al. 2017)."""
    collect: Collect = "steps"
    """`steps`: n_steps per env with autoreset; `episodes`: one whole episode per env from a seeded reset."""
    n_envs: int = 8
    """Parallel envs in `steps` mode (each advances n_steps per update, carrying its episode across updates)."""
    n_starts: int = 8
    """Start states per update in `episodes` mode (seeded resets), each run group_size times; on TextGen, where
    a start state is a prompt, the prompts per update of a grouped algorithm (others sample 8 × n_starts)."""
    n_steps: int = 64
    """Steps per env per update in `steps` mode (CleanRL: 128; 64 measured faster to 475 on CartPole here)."""
    group_size: int = 1
    """Episodes per start state (G); ≥ 2 for the `group` advantage (DeepSeekMath uses 64; we sweep 2–16)."""
    gamma: float = 0.99
    """Discount factor (CleanRL, SB3 default)."""
    gae_lambda: float = 0.95
    """GAE λ (Schulman et al. 2016; CleanRL, SB3 default)."""
    clip: float | None = 0.2
    """Clip ε of the surrogate, or None for the unclipped ratio objective (PPO paper: 0.2)."""
    clip_high: float | None = None
    """Upper clip ε when asymmetric, else `clip` (DAPO: 0.28)."""
    kl_coef: float = 0.0
    """β of the KL-to-reference term (DeepSeekMath GRPO: 0.04); 0 turns it off."""
    kl_estimator: KLEstimator = "k1"
    """Per-token KL estimator (Schulman's note on approximating KL): `k1` = log π − log π_ref, `k2` = ½(log π −
    log π_ref)², `k3` = r − 1 − log r with r = π_ref/π (DeepSeekMath eq. 4)."""
    kl_placement: KLPlacement = "reward"
    """`reward`: −β·k per token is added to the reward before advantages (RLHF PPO, TRL's PPOTrainer; with
    k1 its gradient is ∇KL(π‖π_ref) for the sequence); `loss`: +β·E[k] is added to the loss (GRPO; with k3
    its on-policy gradient is ∇KL(π_ref‖π) per token, with k2 ∇KL(π‖π_ref) per token)."""
    kl_importance_weight: bool = False
    """Weight a loss-placed KL by the detached π/π_old, so that epochs after the first (samples from π_old) keep
    the on-policy expected gradient (exactly for one step; cf. DeepSeek-V3.2); a reward-placed KL is weighted by
    the policy loss's ratio instead."""
    scale_rewards: ScaleRewards = "group"
    """`group`: divide by the group std (GRPO); `none`: keep only the mean baseline (Dr. GRPO)."""
    group_baseline: GroupBaseline = "mean"
    """`mean`: group mean; `loo`: leave-one-out mean of the other G−1 (RLOO, Ahmadian et al. 2024)."""
    std_floor: float = 1e-4
    """A group whose reward std is at most this gets advantage 0 (counted in frac_reward_zero_std)."""
    norm_adv: bool = True
    """Normalize advantages per minibatch (CleanRL ppo.py: True)."""
    epochs: int = 10
    """Passes over each batch (SB3 PPO default: 10)."""
    minibatches: int = 2
    """Minibatches per epoch (CleanRL: 4; 2 gives SB3's 256-sample minibatches at 8 × 64 steps)."""
    lr: float = 1e-3
    """Adam learning rate (RL Zoo's CartPole PPO: 1e-3, linearly annealed)."""
    anneal_lr: bool = True
    """Linearly decay the learning rate to 0 over the run (CleanRL ppo.py: True)."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient (SB3 default 0.0)."""
    value_epochs: int = 0
    """Extra critic-only passes over each batch after the policy step (REINFORCE-with-baseline's separate
    baseline fit, Sutton & Barto §13.4); 0 fits the critic only jointly with the policy (PPO, A2C)."""
    vf_coef: float = 0.5
    """Value-loss coefficient (CleanRL, SB3 default)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip (CleanRL, SB3 default)."""
    loss_agg: LossAgg = "token"
    """`token`: mean over all valid steps; `sequence`: mean over sequences of per-sequence means (GRPO paper)."""
    noise_splits: int = 4
    """K disjoint minibatches whose gradients measure gradient noise (Ilyas et al. 2020)."""
    noise_every: int = 1
    """Measure gradient noise on the first update and every noise_every-th after it (measurement only: training
    is bitwise the same for any value); > 1 where the probe would cost a large share of a run."""
    hidden: int = 64
    """Hidden width of MLP policy and critic (CleanRL: 64)."""
    trainer: Trainer = "rlbench"
    """Who trains the column: `rlbench` (the one training loop), or Stable-Baselines3's PPO or A2C given these
    settings in SB3's terms (rlbench.sb3_runner; the `sb3` extra). Fixed by the preset, not settable."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f.name, getattr(self, f.name), _HINTS[f.name])
        counts = ("n_envs", "n_starts", "n_steps", "group_size", "epochs", "minibatches", "noise_every", "hidden")
        for name in (*counts, "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{self.name}.{name} = {getattr(self, name)!r}: must be > 0")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{self.name}.{name} = {getattr(self, name)!r}: must be in [0, 1]")
        for name in ("clip", "clip_high"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 10.0:
                raise ValueError(f"{self.name}.{name} = {value!r}: must be in (0, 10) or none")
        if self.value_epochs < 0:
            raise ValueError(f"{self.name}.value_epochs = {self.value_epochs!r}: must be >= 0")
        if self.value_epochs and not self.uses_critic:
            raise ValueError(
                f"{self.name}.value_epochs = {self.value_epochs}: needs a critic (advantage baseline or gae)"
            )
        if self.kl_placement == "loss" and self.kl_estimator == "k1":
            raise ValueError(
                f"{self.name}: kl_estimator = 'k1' with kl_placement = 'loss' has zero expected gradient "
                "(E_π[∇log π] = 0); allowed: k1 in the reward, or k2/k3 in the loss"
            )
        if self.kl_importance_weight and self.kl_placement == "reward":
            raise ValueError(
                f"{self.name}: kl_importance_weight = True needs kl_placement = 'loss' (a reward-placed KL is "
                "already importance-weighted by the policy loss's ratio π/π_old)"
            )
        if self.clip is None and self.clip_high is not None:
            raise ValueError(f"{self.name}.clip_high = {self.clip_high}: needs a clip (clip is none)")
        for name in ("kl_coef", "ent_coef", "vf_coef", "std_floor"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{self.name}.{name} = {getattr(self, name)!r}: must be >= 0")
        if not self.max_grad_norm > 0:
            raise ValueError(f"{self.name}.max_grad_norm = {self.max_grad_norm!r}: must be > 0")
        if self.noise_splits < 2:
            raise ValueError(f"{self.name}.noise_splits = {self.noise_splits!r}: must be >= 2")
        units = self.n_envs * self.n_steps if self.collect == "steps" else self.streams
        for name in ("minibatches", "noise_splits"):
            if getattr(self, name) > units:
                raise ValueError(
                    f"{self.name}.{name} = {getattr(self, name)}: must be <= the {units} units of a batch "
                    f"({'n_envs × n_steps' if self.collect == 'steps' else 'n_starts × group_size episodes'})"
                )
        if self.advantage == "group":
            if self.group_size < 2:
                raise ValueError(f"{self.name}.group_size = {self.group_size!r}: the group advantage needs G >= 2")
            if self.collect != "episodes":
                raise ValueError(f"{self.name}.collect = {self.collect!r}: the group advantage needs 'episodes'")

    @property
    def grouped(self) -> bool:
        """Whether episodes come in groups of group_size that share a start (a seeded reset, or a prompt)."""
        return self.collect == "episodes" and self.group_size > 1

    @property
    def uses_critic(self) -> bool:
        """Whether a value network is trained (the `baseline` and `gae` estimators need one)."""
        return self.advantage in ("baseline", "gae")

    @property
    def streams(self) -> int:
        """Parallel trajectories per update: n_starts × group_size in `episodes` mode, n_envs in `steps` mode."""
        return self.n_starts * self.group_size if self.collect == "episodes" else self.n_envs

    def replace(self, **changes: Any) -> AlgoConfig:
        """A validated copy with `changes` applied; unknown field names are a ValueError naming them."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown algorithm setting(s) {unknown}; allowed: {', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes)


_HINTS = get_type_hints(AlgoConfig)
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AlgoConfig))
SETTABLE: tuple[str, ...] = tuple(f for f in FIELDS if f not in ("name", "trainer"))
"""Fields a user may set (--set, a column's own settings): all but the column's name and its trainer."""


def _check_field(name: str, value: Any, hint: Any) -> None:
    """Type check of one field against its annotation: Literal choices, int, float, bool, str, Optional."""
    options = get_args(hint)
    if getattr(hint, "__origin__", None) is Literal:
        if value not in options:
            raise ValueError(f"{name} = {value!r}: allowed values are {', '.join(map(repr, options))}")
        return
    if type(None) in options:
        if value is None:
            return
        hint = next(o for o in options if o is not type(None))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise ValueError(f"{name} = {value!r}: expected {hint.__name__}")


def group_preset(name: str, **changes: Any) -> AlgoConfig:
    """A GRPO-family preset: no critic, G = 8 episodes from each of 4 start states per update, group-relative
    advantages, the clipped surrogate and β = 0.04 k3 KL to the reference in the loss, without importance
    weight (DeepSeekMath eq. 3–4; its on-policy gradient is that of the per-token KL(π_ref‖π)), plus `changes`."""
    base = dict(
        advantage="group",
        policy_loss="clip",
        collect="episodes",
        n_starts=4,
        group_size=8,
        kl_coef=0.04,
        kl_estimator="k3",
        kl_placement="loss",
    )
    return AlgoConfig(name=name, **{**base, "norm_adv": False, **changes})
