"""`--tensorboard`: event files hold the stored metrics under SB3's names, and writing them changes no result."""

import sys

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from rlbench.cli import app
from rlbench.tensorboard import EVENTS_DIR

runner = CliRunner()
SWEEP = ["run", "--preset", "smoke", "--algos", "ppo", "--envs", "CartPole-v1", "--seeds", "1", "--no-report"]
TAGS = {
    "rollout/ep_rew_mean": "rollout/ep_rew_mean",
    "train/approx_kl": "train/approx_kl",
    "train/policy_gradient_loss": "train/policy_loss",
    "train/learning_rate": "train/lr",
}
"""TensorBoard tag → the metrics.parquet column it must equal."""


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def test_events_equal_the_stored_metrics_and_change_nothing(tmp_path):
    with_events, without = tmp_path / "tb", tmp_path / "plain"
    assert runner.invoke(app, [*SWEEP, "--out", str(with_events), "--tensorboard"]).exit_code == 0
    assert runner.invoke(app, [*SWEEP, "--out", str(without)]).exit_code == 0
    run = with_events / "CartPole-v1" / "ppo" / "seed0"
    metrics = pd.read_parquet(run / "metrics.parquet")
    evals = pd.read_parquet(run / "evals.parquet")
    logged = scalars(run / EVENTS_DIR)
    for tag, column in TAGS.items():
        expected = [(int(s), float(np.float32(v))) for s, v in zip(metrics.env_steps, metrics[column]) if pd.notna(v)]
        assert logged[tag] == expected and expected, tag
    assert logged["eval/mean_reward"] == [
        (int(s), float(np.float32(v))) for s, v in zip(evals.env_steps, evals["eval/return_mean"])
    ]
    plain = pd.read_parquet(without / "CartPole-v1" / "ppo" / "seed0" / "metrics.parquet")
    measured = [c for c in metrics.columns if not c.startswith("time/")]  # wall-clock columns differ run to run
    pd.testing.assert_frame_equal(metrics[measured], plain[measured])


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    result = runner.invoke(app, [*SWEEP, "--out", str(tmp_path / "o"), "--tensorboard"])
    assert result.exit_code == 2
    assert "rlbench[tensorboard]" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()
