"""Training a column Stable-Baselines3 trains (`sb3_ppo`, `sb3_a2c`) into the same RunResult as rlbench's loop.

SB3 gets the settings of rlbench.sb3_mapping, one seed drawn from the run's `sb3` stream, and whole rollouts of
the budget (sb3_mapping.rollout_budget). Evaluations are rlbench's own (rlbench.task.GymEvaluator, Evaluations):
the same checkpoints, held-out seeds and deterministic actions as a native column. Per-update rows hold what
means the same as rlbench's metric of that name (episodes finished in the batch, explained variance, lr,
timings), and SB3's other train/* values under `sb3/` (its approx_kl and clip_fraction are measured during the
epochs, rlbench's after the update, so they are not the same metric). What SB3 cannot measure (gradient
noise, KL to reference, FLOPs, update memory) is absent from the rows and the summary.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import stable_baselines3
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from rlbench.metrics import peak_rss_mb
from rlbench.rng import np_stream
from rlbench.sb3_mapping import rollout_budget, sb3_algo, sb3_kwargs
from rlbench.spec import RunSpec, Status
from rlbench.task import Evaluations, GymEvaluator
from rlbench.train import RunResult

SAME_MEANING = {"train/explained_variance": "train/explained_variance", "train/learning_rate": "train/lr"}
"""SB3 logger key → rlbench's metric of the same meaning; SB3's other train/* keys are kept as `sb3/<key>`."""


class SB3Actor:
    """An SB3 policy behind the act() that rlbench's evaluator calls."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def act(self, obs: torch.Tensor, generator: torch.Generator, deterministic: bool = False) -> torch.Tensor:
        """SB3's action for each row of obs [N, d] (the mode when deterministic); `generator` is unused."""
        actions, _ = self.policy.predict(obs.numpy(), deterministic=deterministic)
        return torch.as_tensor(actions)


def train_sb3(spec: RunSpec) -> RunResult:
    """Train one run of an SB3 column on at most spec.steps env steps; rlbench's evaluations on the way. SB3 does
    not guard its updates, so a run whose policy parameters stop being finite (SB3 raises at the next use) ends
    `diverged` with what it recorded so far (no final evaluation: its policy is no longer finite)."""
    cfg = spec.algo
    algo = sb3_algo(cfg)
    total = rollout_budget(cfg, spec.steps)
    seed = int(np_stream(spec.seed, "sb3").integers(2**31))
    env = make_vec_env(spec.env_id, n_envs=cfg.n_envs, seed=seed, env_kwargs=spec.env_kwargs)
    model = getattr(stable_baselines3, algo)(
        "MlpPolicy", env, seed=seed, device="cpu", verbose=0, **sb3_kwargs(cfg, total, algo)
    )
    actor = SB3Actor(model.policy)
    evals = Evaluations(GymEvaluator(spec.env_id, spec.env_kwargs, spec.eval_episodes), spec.steps, spec.eval_points)
    recorder = Recorder(actor, evals)
    start = time.perf_counter()
    evals.before_training(actor)
    status, reason = Status.OK, ""
    try:
        model.learn(total_timesteps=total, callback=recorder, log_interval=None)
        evals.at_end(actor, recorder.update, recorder.env_steps)
    except Exception as err:
        if all(torch.isfinite(p).all() for p in model.policy.parameters()):
            raise
        status = Status.DIVERGED
        reason = (
            f"policy parameters became non-finite by update {recorder.update} (after {recorder.env_steps} env "
            f"steps; SB3 then raised {type(err).__name__})"
        )
    finally:
        env.close()
    wall = time.perf_counter() - start
    final = evals.final(recorder.update)
    value_parts = [model.policy.value_net, model.policy.mlp_extractor.value_net]
    params_critic = sum(p.numel() for part in value_parts for p in part.parameters())
    summary = {
        "status": status,
        "reason": reason,
        "updates": recorder.update,
        "env_steps": recorder.env_steps,
        "final_return": final.get("eval/return_mean", math.nan),
        "final_return_episode_std": final.get("eval/return_std", math.nan),
        "wall_time_s": wall,
        "rollout_time_s": recorder.rollout_s,
        "update_time_s": recorder.update_s,
        "env_steps_per_s": recorder.env_steps / wall if wall > 0 else math.nan,
        "params_policy": sum(p.numel() for p in model.policy.parameters()) - params_critic,
        "params_critic": params_critic,
        "peak_rss_mb": peak_rss_mb(),
    }
    return RunResult(metrics=recorder.rows, evals=evals.rows, summary=summary)


class Recorder(BaseCallback):
    """One metrics row per SB3 update, then rlbench's evaluation when one is due. SB3 calls on_rollout_start
    after the previous update's train() and on_training_end after the last; episodes come from Monitor."""

    def __init__(self, actor: SB3Actor, evals: Evaluations) -> None:
        super().__init__()
        self.actor, self.evals = actor, evals
        self.rows: list[dict] = []
        self.update = self.env_steps = 0
        self.rollout_s = self.update_s = 0.0
        self.t0 = self.t1 = math.nan
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def _on_rollout_start(self) -> None:
        if math.isfinite(self.t1):
            self._updated()
        self.t0, self.returns, self.lengths = time.perf_counter(), [], []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.returns.append(float(info["episode"]["r"]))
                self.lengths.append(int(info["episode"]["l"]))
        return True

    def _on_rollout_end(self) -> None:
        self.t1 = time.perf_counter()

    def _on_training_end(self) -> None:
        if math.isfinite(self.t1):
            self._updated()

    def _updated(self) -> None:
        t2 = time.perf_counter()
        steps = int(self.model.num_timesteps) - self.env_steps
        self.update, self.env_steps = self.update + 1, int(self.model.num_timesteps)
        self.rollout_s, self.update_s = self.rollout_s + (self.t1 - self.t0), self.update_s + (t2 - self.t1)
        logged = {
            SAME_MEANING.get(key, f"sb3/{key}"): float(value)
            for key, value in self.model.logger.name_to_value.items()
            if key.startswith("train/")
        }
        self.rows.append(
            {
                "update": self.update,
                "env_steps": self.env_steps,
                "rollout/ep_rew_mean": float(np.mean(self.returns)) if self.returns else math.nan,
                "rollout/ep_len_mean": float(np.mean(self.lengths)) if self.returns else math.nan,
                "rollout/episodes": len(self.returns),
                **logged,
                "time/rollout_s": self.t1 - self.t0,
                "time/update_s": t2 - self.t1,
                "time/fps": steps / (t2 - self.t0),
            }
        )
        self.t1 = math.nan
        self.evals.after_update(self.actor, self.update, self.env_steps)
