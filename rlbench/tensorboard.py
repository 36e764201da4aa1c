"""TensorBoard event files of a finished run, written from its stored metrics (so they never touch training).

Scalars are logged at `global_step` = env steps, as Stable-Baselines3 does; names are the run's metric names,
which already follow SB3 (`rollout/ep_rew_mean`, `train/approx_kl`, `time/fps`, …), except where SB3 logs the
same quantity under another name (`SB3_NAMES`). `tensorboard --logdir runs/<sweep>` then shows every run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

EVENTS_DIR = "tensorboard"
"""Sub-directory of a run directory that holds its event files."""

SB3_NAMES = {
    "train/policy_loss": "train/policy_gradient_loss",
    "train/lr": "train/learning_rate",
    "eval/return_mean": "eval/mean_reward",
}
"""rlbench metric → the name Stable-Baselines3 logs the same quantity under."""

NOT_SCALARS = {"update", "env_steps", "checkpoint"}


class TensorBoardMissing(ValueError):
    """`--tensorboard` was asked for but the tensorboard package is not installed."""


def require() -> None:
    """Raise TensorBoardMissing (naming the extra to install) unless event files can be written."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise TensorBoardMissing(
            'tensorboard is not installed; install it with pip install "rlbench[tensorboard]"'
        ) from None


def tag(metric: str) -> str:
    """The TensorBoard tag of a stored metric column."""
    return SB3_NAMES.get(metric, metric)


def write_events(run_dir: Path, metrics: pd.DataFrame, evals: pd.DataFrame) -> Path:
    """Write every per-update metric and every evaluation of one run as scalars under run_dir/EVENTS_DIR;
    replaces earlier event files there, so writing twice gives the same scalars once."""
    from torch.utils.tensorboard import SummaryWriter

    folder = run_dir / EVENTS_DIR
    if folder.exists():
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
    with SummaryWriter(log_dir=str(folder)) as writer:
        for frame in (metrics, evals):
            for column in (c for c in frame.columns if c not in NOT_SCALARS):
                for step, value in zip(frame["env_steps"], frame[column]):
                    if pd.notna(value):
                        writer.add_scalar(tag(column), float(value), global_step=int(step))
    return folder
