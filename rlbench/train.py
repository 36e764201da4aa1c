"""The one training loop: collect → advantages → (gradient noise) → epochs × minibatches → metrics."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from rlbench.algos import advantages as adv_fns
from rlbench.algos import losses
from rlbench.algos.config import AlgoConfig
from rlbench.metrics import approx_kl, explained_variance, gradient_noise, noise_scale_parts, peak_rss_mb
from rlbench.rollout import RunFault, Trajectories
from rlbench.task import Task, make_task

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
    sums over a run is the simple gradient noise scale (comparable across batch sizes)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    grads = []
    parts = split(units, cfg.noise_splits, generator)
    for mb in parts:
        logp, _ = policy.evaluate(mb)
        g = torch.autograd.grad(policy_objective(cfg, logp, mb), params, allow_unused=True)
        grads.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)]))
    stacked = torch.stack(grads)
    cosine, rel_var = gradient_noise(stacked)
    small = float(np.mean([float(mb["mask"].sum()) for mb in parts]))
    trace, g2 = noise_scale_parts(stacked, small, small * len(parts))
    return {
        "train/grad_cosine": cosine,
        "train/grad_rel_var": rel_var,
        "train/grad_noise_trace": trace,
        "train/grad_sq_norm": g2,
    }


def _all_finite(module: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in module.parameters())


class Trainer:
    """Owns the optimizer and performs every algorithm's update the same way."""

    def __init__(self, cfg: AlgoConfig, task: Task, seed: int) -> None:
        self.cfg = cfg
        self.policy, self.critic = task.policy, task.critic
        self.reference = copy.deepcopy(self.policy).requires_grad_(False)
        self.params = list(self.policy.parameters()) + (list(self.critic.parameters()) if self.critic else [])
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)

    def fit_critic(self, units: dict[str, Tensor]) -> float:
        """cfg.value_epochs critic-only passes; policy gradients stay None, so Adam leaves the policy alone."""
        loss = torch.zeros(())
        for _ in range(self.cfg.value_epochs):
            for mb in split(units, self.cfg.minibatches, self.generator):
                loss = self.cfg.vf_coef * losses.value_loss(self.critic.value(mb), mb["targets"], mb["mask"])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                self.optimizer.step()
        return float(loss.detach())

    def update(self, traj: Trajectories, progress: float) -> dict[str, float]:
        """One update from one batch of trajectories; returns its train/* metrics."""
        cfg, policy, critic = self.cfg, self.policy, self.critic
        if cfg.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * (1.0 - progress)
        per_step, row = estimate_advantages(cfg, traj, critic)
        units = traj.units(per_step)
        with torch.no_grad():
            units["logp_old"], _ = policy.evaluate(units)
            units["ref_logp"], _ = self.reference.evaluate(units)
        mask = units["mask"]
        valid = mask.bool()
        row["train/adv_std"] = float(units["adv"][valid].std()) if mask.sum() > 1 else 0.0
        if critic is not None:
            row["train/explained_variance"] = explained_variance(units["values"][valid], units["targets"][valid])
        row.update(measure_gradient_noise(cfg, policy, units, self.generator))

        low = cfg.clip if cfg.clip is not None else CLIP_REFERENCE
        high = cfg.clip_high if cfg.clip_high is not None else low
        sums: dict[str, float] = {}
        steps = 0
        for _ in range(cfg.epochs):
            for mb in split(units, cfg.minibatches, self.generator):
                logp, entropy = policy.evaluate(mb)
                m = mb["mask"]
                policy_loss = policy_objective(cfg, logp, mb)
                kl_ref = losses.masked_mean(losses.k3(logp, mb["ref_logp"]), m)
                ent = losses.masked_mean(entropy, m)
                loss = policy_loss - cfg.ent_coef * ent + cfg.kl_coef * kl_ref
                terms = {"train/policy_loss": policy_loss, "train/entropy": ent, "train/kl_ref": kl_ref}
                if critic is not None:
                    terms["train/value_loss"] = losses.value_loss(critic.value(mb), mb["targets"], m)
                    loss = loss + cfg.vf_coef * terms["train/value_loss"]
                if not torch.isfinite(loss):
                    raise RunFault("diverged", f"loss became {loss.item()}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                if not torch.isfinite(grad_norm):
                    raise RunFault("diverged", f"gradient norm became {grad_norm.item()}")
                self.optimizer.step()
                terms["train/loss"], terms["train/grad_norm"] = loss, grad_norm
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
                steps += 1
        if critic is not None and cfg.value_epochs:
            row["train/value_loss_fit"] = self.fit_critic(units)
        if not (_all_finite(policy) and (critic is None or _all_finite(critic))):
            raise RunFault("diverged", "parameters became non-finite")
        row.update({key: value / steps for key, value in sums.items()})
        with torch.no_grad():
            logp_new, _ = policy.evaluate(units)
        row["train/approx_kl"] = approx_kl(logp_new[valid], units["logp_old"][valid])
        ratio = torch.exp(logp_new - units["logp_old"])
        row["train/clip_fraction"] = float(
            losses.masked_mean(((ratio < 1.0 - low) | (ratio > 1.0 + high)).float(), mask)
        )
        row["train/lr"] = self.optimizer.param_groups[0]["lr"]
        return row


def train(
    cfg: AlgoConfig,
    env_id: str,
    env_kwargs: dict,
    seed: int,
    total_steps: int,
    eval_episodes: int,
    eval_points: int = 10,
) -> RunResult:
    """Train one (algorithm, env, seed) cell for `total_steps` env steps; measure everything on the way.

    Evaluation runs before training (checkpoint 0) and after the first update that reaches k/eval_points of the
    budget (checkpoint k = 1 … eval_points; an update that crosses several checkpoints evaluates once, for the
    last), so every algorithm's curve has points at the same env steps whatever its batch size.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    task = make_task(env_id, env_kwargs, cfg, seed, eval_episodes)
    trainer = Trainer(cfg, task, seed)
    metrics, evals = [], []
    env_steps, update, flops = 0, 0, 0
    status, reason = "ok", ""
    rollout_s = update_s = 0.0
    start = time.perf_counter()
    try:
        evals.append({"update": 0, "env_steps": 0, "checkpoint": 0, **task.evaluate(task.policy)})
        next_point = 1
        while env_steps < total_steps:
            t0 = time.perf_counter()
            traj = task.collector.collect(task.policy, trainer.generator)
            t1 = time.perf_counter()
            if update == 0:
                with FlopCounterMode(display=False) as counter:
                    row = trainer.update(traj, env_steps / total_steps)
                flops = counter.get_total_flops()
            else:
                row = trainer.update(traj, env_steps / total_steps)
            t2 = time.perf_counter()
            env_steps += traj.env_steps
            update += 1
            rollout_s, update_s = rollout_s + (t1 - t0), update_s + (t2 - t1)
            returns = traj.episode_returns
            metrics.append(
                {
                    "update": update,
                    "env_steps": env_steps,
                    "rollout/ep_rew_mean": float(np.mean(returns)) if returns else math.nan,
                    "rollout/ep_len_mean": float(np.mean(traj.episode_lengths)) if returns else math.nan,
                    "rollout/episodes": len(returns),
                    **traj.extra,
                    **row,
                    "time/rollout_s": t1 - t0,
                    "time/update_s": t2 - t1,
                    "time/fps": traj.env_steps / (t2 - t0),
                }
            )
            if env_steps * eval_points >= total_steps * next_point:
                next_point = min(eval_points, env_steps * eval_points // total_steps)
                evals.append(
                    {"update": update, "env_steps": env_steps, "checkpoint": next_point, **task.evaluate(task.policy)}
                )
                next_point += 1
    except RunFault as fault:
        status, reason = fault.status, str(fault)
        if fault.env_step is not None:
            reason += f" at env step {env_steps + fault.env_step}"
        else:
            reason += f" in update {update + 1} (after {env_steps} env steps)"
    finally:
        task.collector.close()
    wall = time.perf_counter() - start
    final = evals[-1] if evals and evals[-1]["update"] == update else {}
    summary = {
        "status": status,
        "reason": reason,
        "updates": update,
        "env_steps": env_steps,
        "final_return": final.get("eval/return_mean", math.nan),
        "final_return_std": final.get("eval/return_std", math.nan),
        "wall_time_s": wall,
        "rollout_time_s": rollout_s,
        "update_time_s": update_s,
        "env_steps_per_s": env_steps / wall if wall > 0 else math.nan,
        "params_policy": sum(p.numel() for p in task.policy.parameters()),
        "params_critic": sum(p.numel() for p in task.critic.parameters()) if task.critic else 0,
        "flops_per_update": flops,
        "peak_rss_mb": peak_rss_mb(),
        "grad_cosine_mean": _mean(metrics, "train/grad_cosine"),
        "grad_rel_var_mean": _mean(metrics, "train/grad_rel_var"),
        "grad_noise_scale": _ratio_of_sums(metrics, "train/grad_noise_trace", "train/grad_sq_norm"),
    }
    return RunResult(metrics=metrics, evals=evals, summary=summary)


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
