"""`rlbench bench probe` prints what measuring cost each run: how many of its updates the probe measured, the
probe's and the reference forward's shares of its wall time (from the run summary's probe_time_s and
reference_time_s), and their sum, measure_share."""

import re

from typer.testing import CliRunner

from rlbench.cli import app


def test_bench_prints_each_runs_measurement_shares() -> None:
    args = ["bench", "probe", "--algos", "pg,grpo", "--envs", "CartPole-v1", "--preset", "smoke", "--group-size", "2"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    share = r"\s+([\d.]+)%"
    probed = r"\s+(\d+) of (\d+) │"
    rows = re.findall(
        rf"│ (pg|grpo-g2)\s+│ CartPole-v1\s+│{probed}\s+[\d.]+ │{share} │{share} │{share} │", result.output
    )
    assert [row[0] for row in rows] == ["pg", "grpo-g2"], result.output
    for _, probed_updates, updates, probe, reference, total in rows:
        assert int(probed_updates) == int(updates) > 0  # noise_every = 1 on CartPole: every update probed
        # each printed share is rounded to 0.1 %, so the printed sum can be off by up to 3 × 0.05 %
        assert 0 < float(reference) and 0 < float(probe) and abs(float(probe) + float(reference) - float(total)) <= 0.15


def test_bench_refuses_an_unknown_algorithm() -> None:
    result = CliRunner().invoke(app, ["bench", "probe", "--algos", "nope", "--preset", "smoke"])
    assert result.exit_code == 2 and "nope" in result.output
