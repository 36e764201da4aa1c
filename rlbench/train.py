"""The one training loop: collect → advantages → (gradient noise) → epochs × minibatches → metrics."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rlbench import registry
from rlbench.algos import advantages as adv_fns
from rlbench.algos import losses
from rlbench.algos.config import AlgoConfig
from rlbench.envs.textgen_lm import TokenLM
from rlbench.metrics import (
    FlopMeter,
    SavedBytes,
    approx_kl,
    count_flops,
    explained_variance,
    gradient_noise,
    noise_scale_parts,
    peak_rss_mb,
    tensor_bytes,
)
from rlbench.rng import stream_seed, torch_stream
from rlbench.rollout import GymCollector, RunFault, Trajectories
from rlbench.seed_stack import SeedStack, stackable, stacked_evaluate
from rlbench.spec import RunSpec, Status
from rlbench.task import Evaluations, GymEvaluator, SharedEnvs, Task, make_task

CLIP_REFERENCE = 0.2
"""ε of train/clip_fraction (the share of samples whose ratio π_new/π_old ended the update outside
[1 − ε, 1 + ε]) for algorithms that do not clip."""


@dataclass
class RunResult:
    """Per-update metric rows, evaluation rows and the run summary."""

    metrics: list[dict]
    evals: list[dict]
    summary: dict


def estimate_advantages(
    cfg: AlgoConfig, traj: Trajectories, critic: nn.Module | None
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The algorithm's advantage estimator on [N, T] trajectories → per-step adv, value targets, old values."""
    out: dict[str, Tensor] = {}
    info: dict[str, float] = {}
    if critic is not None:
        with torch.no_grad():
            values = critic.value(traj.inputs)
            last = (
                torch.zeros_like(values[:, :1]) if traj.last_inputs is None else critic.value(traj.last_inputs)[:, None]
            )
        next_values = torch.cat([values[:, 1:], last], dim=1)
        out["values"] = values
    if cfg.advantage == "return":
        out["adv"] = out["targets"] = adv_fns.discounted_returns(traj.rewards, traj.ends, cfg.gamma)
    elif cfg.advantage == "centred":
        out["targets"] = adv_fns.discounted_returns(traj.rewards, traj.ends, cfg.gamma)
        out["adv"] = adv_fns.centred(out["targets"], traj.mask)
    elif cfg.advantage == "baseline":
        bootstrap = next_values * (1.0 - traj.terminated)
        out["targets"] = adv_fns.discounted_returns(traj.rewards, traj.ends, cfg.gamma, bootstrap)
        out["adv"] = out["targets"] - values
    elif cfg.advantage == "gae":
        out["adv"], out["targets"] = adv_fns.gae(
            traj.rewards, values, next_values, traj.terminated, traj.ends, cfg.gamma, cfg.gae_lambda
        )
    else:
        returns = traj.stream_returns()
        per_stream, zero_std = adv_fns.group_relative(
            returns, cfg.group_size, cfg.scale_rewards, cfg.group_baseline, cfg.std_floor
        )
        out["adv"] = per_stream[:, None].expand_as(traj.rewards).contiguous()
        info["train/frac_reward_zero_std"] = zero_std
        info["train/reward_std"] = float(returns.reshape(-1, cfg.group_size).std(dim=1).mean())
    return out, info


def policy_objective(cfg: AlgoConfig, logp: Tensor, mb: dict[str, Tensor]) -> Tensor:
    """The algorithm's policy loss on one minibatch (advantages normalized first if cfg.norm_adv)."""
    adv, mask = mb["adv"], mb["mask"]
    if cfg.norm_adv:
        mean = losses.masked_mean(adv, mask)
        std = losses.masked_mean((adv - mean) ** 2, mask).sqrt()
        adv = (adv - mean) / (std + 1e-8)
    seq = mb.get("seq")
    if cfg.policy_loss == "pg":
        return losses.pg_loss(logp, adv, mask, cfg.loss_agg, seq)
    return losses.clipped_surrogate(logp, mb["logp_old"], adv, mask, cfg.clip, cfg.clip_high, cfg.loss_agg, seq)


def minibatch_loss(
    cfg: AlgoConfig, logp: Tensor, entropy: Tensor, values: Tensor | None, mb: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of one minibatch step and its logged terms: policy loss − ent_coef·entropy (+ kl_coef·KL term
    when the KL is loss-placed) (+ vf_coef·value loss, `values` being the critic's V(s)). train/kl_ref logs the
    k3 value of KL(π‖π_ref) whatever the algorithm trains on."""
    m = mb["mask"]
    policy_loss = policy_objective(cfg, logp, mb)
    kl_ref = losses.masked_mean(losses.k3(logp, mb["ref_logp"]), m)
    ent = losses.masked_mean(entropy, m)
    loss = policy_loss - cfg.ent_coef * ent
    terms = {"train/policy_loss": policy_loss, "train/entropy": ent, "train/kl_ref": kl_ref}
    if cfg.kl_placement == "loss" and cfg.kl_coef > 0:
        # k3 unweighted is exactly the logged kl_ref: reuse it rather than build the same graph twice.
        plain_k3 = cfg.kl_estimator == "k3" and not cfg.kl_importance_weight
        kl_term = (
            kl_ref
            if plain_k3
            else losses.kl_loss(logp, mb["ref_logp"], mb["logp_old"], m, cfg.kl_estimator, cfg.kl_importance_weight)
        )
        loss = loss + cfg.kl_coef * kl_term
    if values is not None:
        terms["train/value_loss"] = losses.value_loss(values, mb["targets"], m)
        loss = loss + cfg.vf_coef * terms["train/value_loss"]
    return loss, terms


def critic_loss(cfg: AlgoConfig, values: Tensor, mb: dict[str, Tensor]) -> Tensor:
    """The loss of a critic-fit step (value_epochs): vf_coef · value loss of the critic's V(s) `values`."""
    return cfg.vf_coef * losses.value_loss(values, mb["targets"], mb["mask"])


def split(units: dict[str, Tensor], parts: int, generator: torch.Generator) -> list[dict[str, Tensor]]:
    """Shuffle units along dim 0 and cut them into `parts` disjoint minibatches of near-equal size."""
    n = units["mask"].shape[0]
    order = torch.randperm(n, generator=generator)
    return [{k: v[idx] for k, v in units.items()} for idx in order.tensor_split(parts)]


def measure_gradient_noise(
    cfg: AlgoConfig, policy: nn.Module, units: dict[str, Tensor], generator: torch.Generator
) -> dict[str, float]:
    """Policy-loss gradients of K disjoint minibatches at the pre-update parameters: mean pairwise cosine,
    relative variance, and McCandlish et al.'s unbiased per-update estimates of tr(Σ) and |G|², whose ratio of
    sums over a run is the simple gradient noise scale (comparable across batch sizes).

    The K gradients come from one stacked forward and backward over K copies of the policy when the
    minibatches have equal shapes and the networks stack (rlbench.seed_stack; each gradient bit for bit its own
    pass's), else from one forward and backward per minibatch.
    """
    parts = split(units, cfg.noise_splits, generator)
    language_model = isinstance(policy, TokenLM)
    if (
        stackable(policy, None)
        and (language_model or cfg.loss_agg == "token")
        and len({_unit_shape(part) for part in parts}) == 1
    ):
        copies = {
            name: p.detach().expand(len(parts), *p.shape).clone().requires_grad_()
            for name, p in policy.named_parameters()
        }
        grads = stacked_policy_gradients(cfg, policy, copies, _stack_units(parts), language_model)
        return gradient_noise_metrics(grads, parts)
    params = [p for p in policy.parameters() if p.requires_grad]
    grads = []
    for mb in parts:
        logp, _ = policy.evaluate(mb)
        g = torch.autograd.grad(policy_objective(cfg, logp, mb), params, allow_unused=True)
        grads.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)]))
    return gradient_noise_metrics(torch.stack(grads), parts)


def stacked_policy_gradients(
    cfg: AlgoConfig, policy: nn.Module, params: dict[str, Tensor], mb: dict[str, Tensor], loop: bool
) -> Tensor:
    """Flattened policy-objective gradients [S, P] of stacked copies of `policy` (`params`: its named parameters
    with a leading stack dimension), each on its own slice of the stacked minibatch `mb`, from one forward and
    one backward; `loop` as in _per_seed."""
    logp, _ = stacked_evaluate(policy, params, mb)
    objectives = _per_seed(partial(policy_objective, cfg), loop, logp, mb)
    grads = torch.autograd.grad(objectives.sum(), list(params.values()))
    return torch.cat([g.reshape(len(objectives), -1) for g in grads], dim=1)


def gradient_noise_metrics(grads: Tensor, parts: list[dict[str, Tensor]]) -> dict[str, float]:
    """measure_gradient_noise's metrics from the K minibatches' flattened gradients [K, P] and the minibatches."""
    cosine, rel_var = gradient_noise(grads)
    small = float(np.mean([float(mb["mask"].sum()) for mb in parts]))
    trace, g2 = noise_scale_parts(grads, small, small * len(parts))
    return {
        "train/grad_cosine": cosine,
        "train/grad_rel_var": rel_var,
        "train/grad_noise_trace": trace,
        "train/grad_sq_norm": g2,
    }


@dataclass
class Epochs:
    """What an update's policy epochs leave: sums of each loss term over steps, the step count, the largest
    saved-activation bytes of a step and the FLOPs of all steps (and the critic fit, when it ran with them)."""

    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    steps: int = 0
    peak: int = 0
    flops: int = 0
    critic_fit: tuple[float, int, int] | None = None
    """The critic fit's (last value loss, largest saved bytes of a step, FLOPs) when it ran with the epochs
    (update_together), else None: Trainer.complete fits the critic."""

    def add(self, terms: dict[str, float], saved: int, flops: int) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps, self.peak, self.flops = self.steps + 1, max(self.peak, saved), self.flops + flops


def _all_finite(module: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in module.parameters())


class Trainer:
    """Owns the optimizer and performs every algorithm's update the same way.

    Random draws come from the run's named streams (rlbench.rng): `action_rng` samples actions, `minibatch_rng`
    shuffles minibatches, `noise_rng` splits the gradient-noise probe, so measuring never moves training.
    """

    def __init__(self, cfg: AlgoConfig, task: Task, seed: int, flops: FlopMeter | None = None) -> None:
        if cfg.trainer != "rlbench":
            raise ValueError(
                f"{cfg.name} is trained by {cfg.trainer}, not rlbench's loop (rlbench.executor dispatches)"
            )
        self.cfg = cfg
        self.policy, self.critic = task.policy, task.critic
        self.reference = copy.deepcopy(self.policy).requires_grad_(False)
        self.policy_params = list(self.policy.parameters())
        self.critic_params = list(self.critic.parameters()) if self.critic else []
        self.params = self.policy_params + self.critic_params
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.action_rng = torch_stream(seed, "actions")
        self.minibatch_rng = torch_stream(seed, "minibatches")
        self.noise_rng = torch_stream(seed, "noise")
        self.flops = flops or FlopMeter()
        self.reference_s = 0.0
        """Wall time of the reference's forward passes for the current update (its collection's included)."""
        self.updates = 0
        """Updates completed."""
        self.saved_bytes: dict[tuple, int] = {}
        """Saved-activation bytes of a minibatch step per (kind, unit shape) (step_cost)."""

    def step(self, loss: Tensor) -> tuple[Tensor, Tensor]:
        """Backward and one optimizer step with the policy's and the critic's gradients each clipped to
        max_grad_norm on its own, so a value-loss gradient never scales the policy step. Returns both
        pre-clip norms (0 for a part without gradients)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms = [nn.utils.clip_grad_norm_(p, self.cfg.max_grad_norm) for p in (self.policy_params, self.critic_params)]
        for name, norm in zip(("policy", "critic"), norms):
            if not torch.isfinite(norm):
                raise RunFault(Status.DIVERGED, f"{name} gradient norm became {norm.item()}")
        self.optimizer.step()
        return norms[0], norms[1]

    def fit_critic(self, units: dict[str, Tensor]) -> tuple[float, int, int]:
        """cfg.value_epochs critic-only passes; policy gradients stay None, so Adam leaves the policy alone.
        Returns the last value loss, the largest saved-activation bytes of a step and the FLOPs of all steps."""
        loss, peak, flops = torch.zeros(()), 0, 0
        for _ in range(self.cfg.value_epochs):
            for mb in split(units, self.cfg.minibatches, self.minibatch_rng):
                (loss, saved), counted = self.flops.measure(
                    "critic_step", _unit_shape(mb), partial(self._critic_step, mb)
                )
                peak, flops = max(peak, saved), flops + counted
        return float(loss.detach()), peak, flops

    def _critic_step(self, mb: dict[str, Tensor]) -> tuple[Tensor, int]:
        """One optimizer step on the value loss of `mb`; returns the loss and its saved-activation bytes."""
        with SavedBytes(self.params) as saved:
            loss = self._critic_loss(mb)
        self.step(loss)
        return loss, saved.bytes

    def update(self, traj: Trajectories, progress: float) -> dict[str, float]:
        """One update from one batch of trajectories; returns its train/* metrics.

        train/flops counts what the algorithm computes: advantage estimation, the old and reference
        log-probabilities, every minibatch step (forward and backward) and the critic fit; the gradient-noise
        probe and the post-update diagnostics are measurement and are not counted. time/probe_s and
        time/reference_s are the wall time of the probe (0 on an update it skips: `probing`) and of the frozen
        reference's forward passes (in collecting the batch too, when the collector computed them).
        """
        row, units, flops = self.prepare(traj, progress)
        row.update(self.probe(units))
        return self.complete(row, units, self.policy_epochs(units), flops)

    def prepare(self, traj: Trajectories, progress: float) -> tuple[dict[str, float], dict[str, Tensor], int]:
        """An update up to its gradient-noise probe: the learning rate for `progress`, a reward-placed KL,
        advantages, old and reference log-probabilities. Returns the metrics so far, the minibatch units and the
        FLOPs counted so far."""
        cfg = self.cfg
        self.reference_s = traj.reference_s
        if cfg.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * (1.0 - progress)
        flops = 0
        if cfg.kl_coef > 0 and cfg.kl_placement == "reward":
            valid = traj.mask.bool()
            given = traj.reference_logp
            if traj.sequence_units:
                inputs = traj.inputs
            else:
                inputs = {k: v[valid] for k, v in traj.inputs.items()}
                given = None if given is None else given[valid]
            per_step, flops = self.flops.measure(
                "reward_kl", _rows_shape(inputs), lambda: self._reward_kl(inputs, given)
            )
            traj = penalised(traj, per_step, cfg.kl_coef)
        (per_step, row), counted = self.flops.measure(
            "advantages", _batch_shape(traj), lambda: estimate_advantages(cfg, traj, self.critic)
        )
        if traj.reference_logp is not None:
            per_step = {**per_step, "ref_logp": traj.reference_logp}
        units = traj.units(per_step, every_slot=cfg.collect == "steps")
        flops += counted
        _, counted = self.flops.measure("old_logp", _unit_shape(units), lambda: self._old_logp(units))
        flops += counted
        row.update(self._batch_stats(units))
        return row, units, flops

    @property
    def probing(self) -> bool:
        """Whether the gradient-noise probe measures the update under way: the first and every noise_every-th."""
        return self.updates % self.cfg.noise_every == 0

    def probe(self, units: dict[str, Tensor]) -> dict[str, float]:
        """The gradient-noise probe at the pre-update parameters (measure_gradient_noise) and its wall time; on an
        update it skips (`probing`), only time/probe_s = 0."""
        if not self.probing:
            return {"time/probe_s": 0.0}
        start = time.perf_counter()
        row = measure_gradient_noise(self.cfg, self.policy, units, self.noise_rng)
        row["time/probe_s"] = time.perf_counter() - start
        return row

    def complete(self, row: dict[str, float], units: dict[str, Tensor], epochs: Epochs, flops: int) -> dict[str, float]:
        """The rest of an update after its policy epochs: the critic fit, the finiteness check and the
        post-update diagnostics; returns the update's metrics."""
        terms, counted = self._after_epochs(units, epochs)
        row.update(terms)
        row.update(self._update_size(units))
        row["train/lr"] = self.optimizer.param_groups[0]["lr"]
        row["train/flops"] = float(flops + counted)
        row["time/reference_s"] = self.reference_s
        self.updates += 1
        return row

    def _reward_kl(self, inputs: dict[str, Tensor], given: Tensor | None) -> Tensor:
        """The KL estimator k(log π_old, log π_ref) of every sampled step in `inputs` (no gradient); `given` as in
        _reference_logp."""
        with torch.no_grad():
            logp, _ = self.policy.evaluate(inputs)
        return losses.kl_estimate(logp, self._reference_logp(inputs, given), self.cfg.kl_estimator)

    def _old_logp(self, units: dict[str, Tensor]) -> None:
        """Adds the pre-update policy's and the reference's log-probabilities to `units` (the reference's given
        by the collector when `units` holds them already)."""
        with torch.no_grad():
            units["logp_old"], _ = self.policy.evaluate(units)
        units["ref_logp"] = self._reference_logp(units, units.get("ref_logp"))

    def _reference_logp(self, inputs: dict[str, Tensor], given: Tensor | None = None) -> Tensor:
        """log π_ref(a|s) of the frozen reference (no gradient); its wall time is added to reference_s. `given`:
        the collector's (Trajectories.reference_logp), returned without a forward pass of ours; while the FLOP
        meter counts, the pass still runs (its result unused), so train/flops counts the reference's
        log-probabilities however they were obtained."""
        if given is not None:
            if self.flops.counting:
                with torch.no_grad():
                    self.reference.evaluate(inputs)
            return given
        start = time.perf_counter()
        with torch.no_grad():
            ref_logp, _ = self.reference.evaluate(inputs)
        self.reference_s += time.perf_counter() - start
        return ref_logp

    def _batch_stats(self, units: dict[str, Tensor]) -> dict[str, float]:
        """Advantage std over valid steps; the critic's explained variance of its targets."""
        mask = units["mask"]
        valid = mask.bool()
        row = {"train/adv_std": float(units["adv"][valid].std()) if mask.sum() > 1 else 0.0}
        if self.critic is not None:
            row["train/explained_variance"] = explained_variance(units["values"][valid], units["targets"][valid])
        return row

    def policy_epochs(self, units: dict[str, Tensor]) -> Epochs:
        """cfg.epochs passes of cfg.minibatches optimizer steps on the loss (rlbench.train.minibatch_loss)."""
        epochs = Epochs()
        for _ in range(self.cfg.epochs):
            for mb in split(units, self.cfg.minibatches, self.minibatch_rng):
                (terms, saved), counted = self.flops.measure("step", _unit_shape(mb), partial(self._minibatch_step, mb))
                epochs.add(terms, saved, counted)
        return epochs

    def _after_epochs(self, units: dict[str, Tensor], epochs: Epochs) -> tuple[dict[str, float], int]:
        """The critic fit after the policy epochs and the finiteness check. Returns the loss terms averaged over
        the policy steps with train/activation_bytes (the largest saved-activation bytes of a step), and the
        FLOPs of every step."""
        row = {key: value / epochs.steps for key, value in epochs.sums.items()}
        peak, flops = epochs.peak, epochs.flops
        if self.critic is not None and self.cfg.value_epochs:
            fit = epochs.critic_fit or self.fit_critic(units)
            row["train/value_loss_fit"], fit_peak, fit_flops = fit
            peak, flops = max(peak, fit_peak), flops + fit_flops
        if not (_all_finite(self.policy) and (self.critic is None or _all_finite(self.critic))):
            raise RunFault(Status.DIVERGED, "parameters became non-finite")
        row["train/activation_bytes"] = float(peak)
        return row, flops

    def _minibatch_step(self, mb: dict[str, Tensor]) -> tuple[dict[str, float], int]:
        """One optimizer step on the algorithm's loss on `mb` (minibatch_loss); returns the loss terms and the
        step's saved-activation bytes."""
        with SavedBytes(self.params) as saved:
            loss, terms = self._loss(mb)
        if not torch.isfinite(loss):
            raise RunFault(Status.DIVERGED, f"loss became {loss.item()}")
        grad_norm, critic_grad_norm = self.step(loss)
        terms["train/loss"], terms["train/grad_norm"] = loss, grad_norm
        if self.critic is not None:
            terms["train/critic_grad_norm"] = critic_grad_norm
        return {key: float(value.detach()) for key, value in terms.items()}, saved.bytes

    def _loss(self, mb: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logp, entropy = self.policy.evaluate(mb)
        values = self.critic.value(mb) if self.critic is not None else None
        return minibatch_loss(self.cfg, logp, entropy, values, mb)

    def _critic_loss(self, mb: dict[str, Tensor]) -> Tensor:
        return critic_loss(self.cfg, self.critic.value(mb), mb)

    def step_cost(self, mb: dict[str, Tensor], kind: str = "step") -> tuple[int, int]:
        """The FLOPs and saved-activation bytes of a minibatch step on `mb` — a policy step (`step`, as
        _minibatch_step measures it) or a critic-fit step (`critic_step`, _critic_step) — for a step taken
        elsewhere (update_together): a shape's first call differentiates the loss without storing anything (the
        parameters' values do not matter); its bytes are kept per shape."""
        shape = _unit_shape(mb)
        flops, saved = self.flops.known(kind, shape), self.saved_bytes.get((kind, shape))
        if flops is None or saved is None:

            def dry() -> int:
                with SavedBytes(self.params) as meter:
                    loss = self._loss(mb)[0] if kind == "step" else self._critic_loss(mb)
                torch.autograd.grad(loss, self.params, allow_unused=True)
                return meter.bytes

            if flops is None:
                saved, flops, seconds = count_flops(dry)
                self.flops.record(kind, shape, flops, seconds)
            else:
                saved = dry()
            self.saved_bytes[(kind, shape)] = saved
        return flops, saved

    def adopt_step_cost(self, mb: dict[str, Tensor], flops: int, saved: int, kind: str = "step") -> None:
        """Take the cost of a `kind` step that another seed's step_cost measured on a minibatch of the same shape
        as `mb` (same networks, same shapes: the same FLOPs and bytes), as if step_cost had measured it here."""
        shape = _unit_shape(mb)
        if self.flops.known(kind, shape) is None:
            self.flops.record(kind, shape, flops, 0.0)
        self.saved_bytes[(kind, shape)] = saved

    def _update_size(self, units: dict[str, Tensor]) -> dict[str, float]:
        """KL(π_old‖π_new) (k3) over the batch and the share of samples whose ratio left [1 − ε, 1 + ε]."""
        cfg, mask = self.cfg, units["mask"]
        valid = mask.bool()
        low = cfg.clip if cfg.clip is not None else CLIP_REFERENCE
        high = cfg.clip_high if cfg.clip_high is not None else low
        with torch.no_grad():
            logp_new, _ = self.policy.evaluate(units)
        ratio = torch.exp(logp_new - units["logp_old"])
        outside = ((ratio < 1.0 - low) | (ratio > 1.0 + high)).float()
        return {
            "train/approx_kl": approx_kl(logp_new[valid], units["logp_old"][valid]),
            "train/clip_fraction": float(losses.masked_mean(outside, mask)),
        }

    def memory_bytes(self) -> dict[str, int]:
        """Bytes an update holds besides activations: trainable parameters (policy + critic), the frozen
        reference when the loss uses it (kl_coef > 0), and the optimizer's state (Adam: two moments + step)."""
        state = [value for per_param in self.optimizer.state.values() for value in per_param.values()]
        return {
            "param_bytes": tensor_bytes(self.params),
            "reference_bytes": tensor_bytes(self.reference.parameters()) if self.cfg.kl_coef > 0 else 0,
            "optimizer_state_bytes": tensor_bytes(state),
        }


def epochs_together(trainers: list[Trainer], units: list[dict[str, Tensor]]) -> bool:
    """Whether the seeds' policy epochs can run as one stacked computation (SeedStack): networks it stacks, the
    same Trainer.probing (the seeds of a batch update in step, so always), and units of equal shapes that are
    steps of the whole batch layout with per-token loss aggregation (steps-mode collection) or whole sequences
    (TextGen)."""
    cfg = trainers[0].cfg
    flat_steps = cfg.collect == "steps" and cfg.loss_agg == "token"
    return (
        all(stackable(t.policy, t.critic) for t in trainers)
        and len({t.probing for t in trainers}) == 1
        and ("seq" not in units[0] or flat_steps)
        and len({_unit_shape(u) for u in units}) == 1
    )


def update_together(trainers: list[Trainer], units: list[dict[str, Tensor]]) -> list[tuple[dict, Epochs | RunFault]]:
    """Trainer.probe, Trainer.policy_epochs and the critic fit (value_epochs) of several seeds of one cell at once
    (epochs_together must allow it), through one SeedStack of their networks; returns each seed's probe metrics
    (time/probe_s: its share of the probe's wall time, 0 when not probing) and epochs (or the RunFault that
    ended them)."""
    stack = SeedStack(
        [t.policy for t in trainers],
        [t.critic for t in trainers] if trainers[0].critic is not None else None,
        [t.optimizer for t in trainers],
    )
    probes, share = [{} for _ in trainers], 0.0
    if trainers[0].probing:
        start = time.perf_counter()
        probes = probe_together(stack, trainers, units)
        share = (time.perf_counter() - start) / len(trainers)
    for row in probes:
        row["time/probe_s"] = share
    epochs = policy_epochs_together(stack, trainers, units)
    if stack.critics is not None and trainers[0].cfg.value_epochs:
        epochs = fit_critic_together(stack, trainers, units, epochs)
    stack.write_back()
    return list(zip(probes, epochs))


def probe_together(stack: SeedStack, trainers: list[Trainer], units: list[dict[str, Tensor]]) -> list[dict]:
    """measure_gradient_noise of every seed in `stack` (its own minibatch split, from its noise stream), the K
    minibatches' forward and backward passes batched across seeds."""
    cfg = trainers[0].cfg
    parts = [split(u, cfg.noise_splits, t.noise_rng) for t, u in zip(trainers, units)]
    per_split = [
        stacked_policy_gradients(cfg, stack.policies[0], stack.policy_params, _stack_units(mbs), stack.language_model)
        for mbs in zip(*parts)
    ]
    grads = torch.stack(per_split, dim=1)
    return [gradient_noise_metrics(g, p) for g, p in zip(grads, parts)]


def _stack_units(units: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The seeds' minibatches (equal shapes) stacked along a leading seed dimension (episode ids left out)."""
    return {key: torch.stack([u[key] for u in units]) for key in units[0] if key != "seq"}


def _per_seed(fn: Callable, loop: bool, *stacked: Tensor | dict[str, Tensor] | None) -> Any:
    """fn applied to every seed's slice of the stacked arguments (None passed as is), the results stacked:
    vmapped, or with `loop` one call per seed (for a function vmap cannot batch, such as the per-sequence loss
    aggregation's boolean indexing)."""
    if not loop:
        return torch.func.vmap(fn, in_dims=tuple(None if a is None else 0 for a in stacked))(*stacked)
    seeds = len(next(a for a in stacked if isinstance(a, Tensor)))
    return _stack_results([fn(*(None if a is None else _slice(a, k) for a in stacked)) for k in range(seeds)])


def _slice(stacked: Tensor | dict[str, Tensor], k: int) -> Tensor | dict[str, Tensor]:
    return {key: value[k] for key, value in stacked.items()} if isinstance(stacked, dict) else stacked[k]


def _stack_results(results: list) -> Any:
    """Per-seed results of one structure (tensors, tuples and dicts of them) as one of stacked tensors."""
    first = results[0]
    if isinstance(first, dict):
        return {key: _stack_results([r[key] for r in results]) for key in first}
    if isinstance(first, tuple):
        return tuple(_stack_results(list(parts)) for parts in zip(*results))
    return torch.stack(results)


def policy_epochs_together(
    stack: SeedStack, trainers: list[Trainer], units: list[dict[str, Tensor]]
) -> list[Epochs | RunFault]:
    """Trainer.policy_epochs of every seed in `stack` at once. Each seed shuffles its own units with its own
    minibatch stream; step j's minibatches (equal shapes) are stacked and go through one forward per network,
    each seed's minibatch_loss, one backward and one Adam step with per-seed clipping. A seed whose loss or
    gradient norm stops being finite ends with a RunFault (its slice of the stack is no longer read); the others
    go on. Each seed's FLOPs and saved bytes are those of its own step (Trainer.step_cost, measured on the first
    seed: the seeds' steps have the same shapes)."""
    cfg = trainers[0].cfg
    out: list[Epochs | RunFault] = [Epochs() for _ in trainers]
    for _ in range(cfg.epochs):
        parts = [split(u, cfg.minibatches, t.minibatch_rng) for t, u in zip(trainers, units)]
        for j in range(cfg.minibatches):
            mbs = [p[j] for p in parts]
            terms = _stacked_step(stack, cfg, _stack_units(mbs))
            flops, saved = trainers[0].step_cost(mbs[0])
            for k, epochs in enumerate(out):
                trainers[k].adopt_step_cost(mbs[k], flops, saved)
                if isinstance(epochs, Epochs):
                    seed_terms = {key: values[k] for key, values in terms.items()}
                    fault = _step_fault(seed_terms)
                    out[k] = fault or epochs
                    if fault is None:
                        epochs.add(seed_terms, saved, flops)
    return out


def fit_critic_together(
    stack: SeedStack, trainers: list[Trainer], units: list[dict[str, Tensor]], epochs: list[Epochs | RunFault]
) -> list[Epochs | RunFault]:
    """Trainer.fit_critic of every seed in `stack` at once, after its policy epochs `epochs`: each seed's own
    minibatch order, one stacked critic forward, backward and Adam step per minibatch (the policy, without
    gradients, stays as it is); a seed whose critic gradient norm stops being finite ends with a RunFault.
    Returns `epochs` with each going seed's critic fit."""
    cfg = trainers[0].cfg
    fits = [(0.0, 0, 0)] * len(trainers)
    for _ in range(cfg.value_epochs):
        parts = [split(u, cfg.minibatches, t.minibatch_rng) for t, u in zip(trainers, units)]
        for j in range(cfg.minibatches):
            mbs = [p[j] for p in parts]
            mb = _stack_units(mbs)
            loss = _per_seed(partial(critic_loss, cfg), stack.language_model, stack.value(mb), mb)
            _, norms = stack.step(loss, cfg.max_grad_norm)
            flops, saved = trainers[0].step_cost(mbs[0], "critic_step")
            for k, trainer in enumerate(trainers):
                trainer.adopt_step_cost(mbs[k], flops, saved, "critic_step")
                if isinstance(epochs[k], Epochs) and not math.isfinite(norms[k]):
                    epochs[k] = RunFault(Status.DIVERGED, f"critic gradient norm became {float(norms[k])}")
                fits[k] = (float(loss[k].detach()), max(fits[k][1], saved), fits[k][2] + flops)
    for k, result in enumerate(epochs):
        if isinstance(result, Epochs):
            result.critic_fit = fits[k]
    return epochs


def _stacked_step(stack: SeedStack, cfg: AlgoConfig, mb: dict[str, Tensor]) -> dict[str, list[float]]:
    """One optimizer step of every seed in `stack` on its row of the stacked minibatch `mb`; returns each loss
    term as a list over seeds."""
    has_critic = stack.critics is not None
    logp, entropy = stack.evaluate(mb)
    values = stack.value(mb) if has_critic else None
    loss, terms = _per_seed(partial(minibatch_loss, cfg), stack.language_model, logp, entropy, values, mb)
    grad_norm, critic_grad_norm = stack.step(loss, cfg.max_grad_norm)
    terms["train/loss"], terms["train/grad_norm"] = loss, grad_norm
    if has_critic:
        terms["train/critic_grad_norm"] = critic_grad_norm
    return {key: value.detach().tolist() for key, value in terms.items()}


def _step_fault(terms: dict[str, float]) -> RunFault | None:
    """The fault Trainer._minibatch_step and Trainer.step raise for these terms of one step, if any."""
    if not math.isfinite(terms["train/loss"]):
        return RunFault(Status.DIVERGED, f"loss became {terms['train/loss']}")
    for name, key in (("policy", "train/grad_norm"), ("critic", "train/critic_grad_norm")):
        if not math.isfinite(terms.get(key, 0.0)):
            return RunFault(Status.DIVERGED, f"{name} gradient norm became {terms[key]}")
    return None


def penalised(traj: Trajectories, per_step: Tensor, kl_coef: float) -> Trajectories:
    """`traj` with −kl_coef·per_step added to the reward of every valid step (a reward-placed KL: each step's
    return then carries the penalty of the steps that follow, as in RLHF PPO). per_step is [N, T] for
    sequence units, else [valid steps] in mask order. Episode returns (what the env paid) are unchanged."""
    valid = traj.mask.bool()
    penalty = per_step * traj.mask if traj.sequence_units else torch.zeros_like(traj.mask).index_put((valid,), per_step)
    return dataclasses.replace(traj, rewards=traj.rewards - kl_coef * penalty)


def _rows_shape(tensors: dict[str, Tensor]) -> tuple:
    """(rows, every tensor's shape after the first dimension) of tensors sharing their first dimension."""
    rows = next(iter(tensors.values())).shape[0]
    return (rows, *((k, tuple(v.shape[1:])) for k, v in sorted(tensors.items())))


def _batch_shape(traj: Trajectories) -> tuple:
    """(T, everything else the advantage estimator's tensor shapes depend on): the [N, T, ...] input shapes
    with the step dimension left out, and the bootstrap inputs' shapes."""
    t = traj.mask.shape[1]

    def dims(tensors: dict[str, Tensor] | None) -> tuple:
        items = sorted((tensors or {}).items())
        return tuple((k, tuple(None if i == 1 and d == t else d for i, d in enumerate(v.shape))) for k, v in items)

    return (t, dims(traj.inputs), None if traj.last_inputs is None else dims(traj.last_inputs))


def _unit_shape(units: dict[str, Tensor]) -> tuple:
    """(number of units, every unit tensor's shape after the first dimension)."""
    return (units["mask"].shape[0], *((k, tuple(v.shape[1:])) for k, v in sorted(units.items())))


@dataclass(frozen=True)
class Crash:
    """A run of a seed batch that raised an error other than a RunFault (the others go on)."""

    reason: str
    traceback: str


class _Member:
    """One seed's run inside a seed batch: its task, trainer, evaluations and the outcome so far."""

    def __init__(self, spec: RunSpec, task: Task) -> None:
        self.spec, self.task = spec, task
        self.trainer = Trainer(spec.algo, task, spec.seed)
        self.evals = Evaluations(task.evaluate, spec.steps, spec.eval_points)
        self.metrics: list[dict] = []
        self.env_steps = self.update = 0
        self.status, self.reason = Status.OK, ""
        self.crash: Crash | None = None
        self.training = True
        self.rollout_s = self.update_s = self.wall_s = 0.0
        self.pending: tuple[Trajectories, dict[str, float], dict[str, Tensor], int] | None = None
        """The update under way: its batch, metrics so far, units and FLOPs so far (Trainer.prepare)."""
        self.epochs_done = Epochs()
        self.update_clock = 0.0
        """Wall time of the update under way so far."""

    def attempt(self, work: Callable[[], None]) -> None:
        """Run `work`; a RunFault ends this run with its status, any other error ends it as a Crash."""
        start = time.perf_counter()
        try:
            work()
        except RunFault as fault:
            self.fault(fault)
        except Exception as err:
            self.training = False
            self.crash = Crash(f"{type(err).__name__}: {err}", traceback.format_exc())
        self.wall_s += time.perf_counter() - start

    def fault(self, fault: RunFault) -> None:
        self.training = False
        self.status, self.reason = fault.status, str(fault)
        if fault.env_step is not None:
            self.reason += f" at env step {self.env_steps + fault.env_step}"
        else:
            self.reason += f" in update {self.update + 1} (after {self.env_steps} env steps)"

    def prepare(self, traj: Trajectories) -> None:
        """Trainer.prepare for this run's batch; the update goes on with `epochs` (or update_together) and
        `complete`."""
        start = time.perf_counter()
        self.pending = (traj, *self.trainer.prepare(traj, self.env_steps / self.spec.steps))
        self.update_clock = time.perf_counter() - start

    def epochs(self) -> None:
        """This run's gradient-noise probe and policy epochs on its own (Trainer.probe, Trainer.policy_epochs)."""
        start = time.perf_counter()
        units = self.pending[2]
        self.pending[1].update(self.trainer.probe(units))
        self.epochs_done = self.trainer.policy_epochs(units)
        self.update_clock += time.perf_counter() - start

    def complete(self, rollout_s: float) -> None:
        """The rest of the update (Trainer.complete) and its metrics row."""
        start = time.perf_counter()
        traj, row, units, flops = self.pending
        row = self.trainer.complete(row, units, self.epochs_done, flops)
        update_s = self.update_clock + time.perf_counter() - start
        self.env_steps += traj.env_steps
        self.update += 1
        self.rollout_s, self.update_s = self.rollout_s + rollout_s, self.update_s + update_s
        self.metrics.append(_update_row(self.update, self.env_steps, traj, row, rollout_s, update_s))
        if self.env_steps >= self.spec.steps:
            self.training = False

    def evaluate(self, checkpoint: int) -> None:
        """Evaluate the policy with the task's evaluate and record it as `checkpoint`."""
        self.evals.record(self.update, self.env_steps, checkpoint, self.task.evaluate(self.task.policy))

    def result(self) -> RunResult | Crash:
        if self.crash is not None:
            return self.crash
        metrics, trainer, policy, critic = self.metrics, self.trainer, self.task.policy, self.task.critic
        final = self.evals.final(self.update)
        summary = {
            "status": self.status,
            "reason": self.reason,
            "updates": self.update,
            "env_steps": self.env_steps,
            "final_return": final.get("eval/return_mean", math.nan),
            "final_return_episode_std": final.get("eval/return_std", math.nan),
            "wall_time_s": self.wall_s,
            "rollout_time_s": self.rollout_s,
            "update_time_s": self.update_s,
            "probe_time_s": sum(row["time/probe_s"] for row in metrics),
            "probed_updates": sum("train/grad_sq_norm" in row for row in metrics),
            "reference_time_s": sum(row["time/reference_s"] for row in metrics),
            "env_steps_per_s": self.env_steps / self.wall_s if self.wall_s > 0 else math.nan,
            "params_policy": sum(p.numel() for p in policy.parameters()),
            "params_critic": sum(p.numel() for p in critic.parameters()) if critic else 0,
            **_compute_summary(metrics, trainer),
            "peak_rss_mb": peak_rss_mb(),
            "grad_cosine_mean": _mean(metrics, "train/grad_cosine"),
            "grad_noise_scale": _ratio_of_sums(metrics, "train/grad_noise_trace", "train/grad_sq_norm"),
        }
        return RunResult(metrics=metrics, evals=self.evals.rows, summary=summary)


def train(spec: RunSpec) -> RunResult:
    """Train one run (algorithm, env, seed): a seed batch of one (train_batch); raises a crash's error."""
    out = train_batch([spec])[0]
    if isinstance(out, Crash):
        raise RuntimeError(f"{out.reason}\n{out.traceback}")
    return out


def train_batch(specs: list[RunSpec]) -> list[RunResult | Crash]:
    """Train the runs of `specs` (one matrix cell, different seeds) together, each on at most `spec.steps` env
    steps, measuring everything on the way; returns each run's result in order.

    Each seed keeps its own networks, optimizer, random streams and evaluations; on Gymnasium envs one
    GymCollector and one GymEvaluator serve all seeds (their envs stepped together, their policies' forward
    passes batched), and in steps mode their probes and optimizer steps run stacked (update_together), so a
    seed's results do not depend on its batch. Each batch is collected with the budget left (rlbench.rollout:
    the last batch is cut at the budget), so no run trains on more than its budget. A run's training ends at
    the budget, or earlier when the steps left give a batch with fewer units than the update splits into
    (minibatches, noise probe; that batch is discarded unused), at a RunFault (its status) or at any other
    error (a Crash); the other seeds go on. Evaluations follow rlbench.task.Evaluations. Times are each run's
    own, with what the batch did together (collection, stacked steps, evaluations) shared equally.
    """
    if len({spec.cell for spec in specs}) != 1:
        raise ValueError("a seed batch holds runs of one matrix cell that differ only in their seed")
    first = specs[0]
    cfg = first.algo
    shared = None
    if registry.task_builder(first.env_id) is None:
        shared = SharedEnvs(
            GymCollector(first.env_id, first.env_kwargs, cfg, [s.seed for s in specs]),
            GymEvaluator(first.env_id, first.env_kwargs, first.eval_episodes, len(specs)),
        )
    members = []
    for spec in specs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(spec.seed, "init"))
            task = make_task(spec.env_id, spec.env_kwargs, cfg, spec.seed, spec.eval_episodes, shared)
        members.append(_Member(spec, task))
    try:
        _evaluate(members, {k: 0 for k in range(len(members))}, shared)
        while training := [k for k, m in enumerate(members) if m.training]:
            start = time.perf_counter()
            batches = _collect(members, training, shared.collector if shared else None)
            share = (time.perf_counter() - start) / len(training)
            ready, updates = [], [m.update for m in members]
            for k in training:
                member, traj = members[k], batches[k]
                if isinstance(traj, RunFault):
                    member.fault(traj)
                    continue
                member.wall_s += share
                if traj is None or not _splittable(cfg, traj):
                    member.training = False
                    continue
                ready.append((member, traj))
            _learn(ready, share)
            updated = [k for k in training if members[k].update > updates[k]]
            due = {k: members[k].evals.due_after(members[k].env_steps) for k in updated}
            _evaluate(members, {k: c for k, c in due.items() if c is not None}, shared)
        ended = [k for k, m in enumerate(members) if m.status == Status.OK and m.crash is None]
        due = {k: members[k].evals.due_at_end() for k in ended}
        _evaluate(members, {k: c for k, c in due.items() if c is not None}, shared)
    finally:
        if shared is not None:
            shared.close()
        else:
            for member in members:
                member.task.collector.close()
    return [member.result() for member in members]


def _evaluate(members: list[_Member], due: dict[int, int], shared: SharedEnvs | None) -> None:
    """Evaluate member k for its checkpoint due[k] and record it: together through the shared evaluator (its
    wall time shared equally), else each with its task's evaluate. An env's RunFault ends that member's run; any
    other error ends the runs evaluated as Crashes."""
    if shared is None:
        for k, checkpoint in due.items():
            m = members[k]
            m.attempt(
                lambda m=m, c=checkpoint: m.evals.record(m.update, m.env_steps, c, m.task.evaluate(m.task.policy))
            )
        return
    if not due:
        return
    start = time.perf_counter()
    try:
        results: dict[int, dict[str, float] | RunFault | Crash] = shared.evaluator.many(
            {k: members[k].task.policy for k in due}
        )
    except Exception as err:
        results = dict.fromkeys(due, Crash(f"{type(err).__name__}: {err}", traceback.format_exc()))
    each = (time.perf_counter() - start) / len(due)
    for k, checkpoint in due.items():
        member, result = members[k], results[k]
        member.wall_s += each
        if isinstance(result, RunFault):
            member.fault(result)
        elif isinstance(result, Crash):
            member.training, member.crash = False, result
        else:
            member.evals.record(member.update, member.env_steps, checkpoint, result)


def _learn(ready: list[tuple[_Member, Trajectories]], rollout_s: float) -> None:
    """One update of each member from its batch (collected in rollout_s each). The members' probes and policy
    epochs run together (update_together) when epochs_together allows it, else one member after another."""
    for member, traj in ready:
        member.attempt(partial(member.prepare, traj))
    going = [member for member, _ in ready if member.training]
    trainers = [member.trainer for member in going]
    if len(going) > 1 and epochs_together(trainers, [member.pending[2] for member in going]):
        start = time.perf_counter()
        try:
            results = update_together(trainers, [member.pending[2] for member in going])
        except Exception as err:
            crash = Crash(f"{type(err).__name__}: {err}", traceback.format_exc())
            results = [({}, crash)] * len(going)
        each = (time.perf_counter() - start) / len(going)
        for member, (probe, result) in zip(going, results):
            member.wall_s += each
            member.update_clock += each
            member.pending[1].update(probe)
            if isinstance(result, Epochs):
                member.epochs_done = result
            elif isinstance(result, RunFault):
                member.fault(result)
            else:
                member.training, member.crash = False, result
    else:
        for member in going:
            member.attempt(member.epochs)
    for member in going:
        if member.training:
            member.attempt(partial(member.complete, rollout_s))


def _collect(
    members: list[_Member], training: list[int], shared: GymCollector | None
) -> dict[int, Trajectories | RunFault | None]:
    """Each training member's next batch (with its budget left): from the shared collector in one pass, else from
    the members' own collectors, together when their class offers `collect_together` (rlbench.task.Collector),
    else in turn."""
    budgets = {k: members[k].spec.steps - members[k].env_steps for k in training}
    if shared is not None:
        policies = [m.task.policy for m in members]
        return shared.collect_batch(policies, {k: members[k].trainer.action_rng for k in training}, budgets)
    collectors = [members[k].task.collector for k in training]
    together = getattr(collectors[0], "collect_together", None)
    if together is not None and len(training) > 1:
        policies, rngs = [members[k].task.policy for k in training], [members[k].trainer.action_rng for k in training]
        return dict(zip(training, together(collectors, policies, rngs, [budgets[k] for k in training])))
    out: dict[int, Trajectories | RunFault | None] = {}
    for k in training:
        member = members[k]
        try:
            out[k] = member.task.collector.collect(member.task.policy, member.trainer.action_rng, budgets[k])
        except RunFault as fault:
            out[k] = fault
    return out


def _splittable(cfg: AlgoConfig, traj: Trajectories) -> bool:
    """Whether the batch has at least as many units as the update splits it into."""
    units = traj.mask.shape[0] if traj.sequence_units else traj.env_steps
    return units >= max(cfg.minibatches, cfg.noise_splits)


def _update_row(update: int, env_steps: int, traj: Trajectories, row: dict, rollout_s: float, update_s: float) -> dict:
    """One metrics.parquet row. rollout/ep_rew_mean is the mean return, as the learner is paid it, of the
    episodes that finished in this batch (on TextGen the proxy reward; eval/return_mean is gold there)."""
    returns = traj.episode_returns
    return {
        "update": update,
        "env_steps": env_steps,
        "rollout/ep_rew_mean": float(np.mean(returns)) if returns else math.nan,
        "rollout/ep_len_mean": float(np.mean(traj.episode_lengths)) if returns else math.nan,
        "rollout/episodes": len(returns),
        **traj.extra,
        **row,
        "time/rollout_s": rollout_s,
        "time/update_s": update_s,
        "time/fps": traj.env_steps / (rollout_s + update_s),
    }


def _compute_summary(metrics: list[dict], trainer: Trainer) -> dict[str, float]:
    """Whole-run compute: total FLOPs (the sum of every update's train/flops), their mean per update and per
    env step, and the memory an update needs: parameters + reference + optimizer state + the largest
    saved-activation bytes of any step (update_memory_bytes, with its parts)."""
    flops = sum(row["train/flops"] for row in metrics)
    steps = metrics[-1]["env_steps"] if metrics else 0
    memory = trainer.memory_bytes()
    memory["activation_peak_bytes"] = int(max((row["train/activation_bytes"] for row in metrics), default=0))
    return {
        "flops_total": flops,
        "flops_per_update": flops / len(metrics) if metrics else math.nan,
        "flops_per_env_step": flops / steps if steps else math.nan,
        "flops_counter_calls": trainer.flops.fresh,
        "flops_count_s": trainer.flops.count_s,
        "update_memory_bytes": sum(memory.values()),
        **memory,
    }


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
    return float(np.mean(values)) if values else math.nan


def _ratio_of_sums(rows: list[dict], num: str, den: str) -> float:
    """Σ num / Σ den over the updates where both are finite (McCandlish et al.'s B_simple from per-update parts)."""
    pairs = [
        (r[num], r[den]) for r in rows if math.isfinite(r.get(num, math.nan)) and math.isfinite(r.get(den, math.nan))
    ]
    total = sum(d for _, d in pairs)
    return sum(n for n, _ in pairs) / total if pairs and total > 0 else math.nan
