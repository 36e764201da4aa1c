"""`rlbench bench` says what its numbers are: textgen's ratio column's header matches its value and its SFT line
says whether the reference model was trained now or loaded from the cache; envs' ratio is batched ÷ sync."""

import re

from typer.testing import CliRunner

from rlbench.cli import app
from rlbench.textgen_bench import benchmark, sft_message


def test_sft_line_says_trained_or_loaded(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RLBENCH_CACHE", str(tmp_path))
    first, second = (benchmark("pg", repeats=1) for _ in range(2))
    assert (first["sft_from_cache"], second["sft_from_cache"]) == (False, True)
    assert re.search(r"trained now in \d+\.\d s on this machine", sft_message(first))
    assert "loaded from the cache" in sft_message(second) and "trained now" not in sft_message(second)


def test_ratio_column_is_update_time_over_generate_time() -> None:
    result = CliRunner().invoke(app, ["bench", "textgen", "--algos", "pg", "--repeats", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "update ÷ generate time" in result.output
    row = re.search(r"│ pg\s+│\s+\d+ │\s+\d+ │\s+([\d,]+) │\s+([\d,]+) │\s+([\d.]+)×", result.output)
    generate_tok_s, update_tok_s, ratio = (float(g.replace(",", "")) for g in row.groups())
    assert abs(ratio - generate_tok_s / update_tok_s) <= 0.05 * ratio + 0.05  # same tokens: time ratio


def test_env_bench_ratio_is_batched_over_sync_and_refuses_envs_without_a_batched_form() -> None:
    result = CliRunner().invoke(
        app, ["bench", "envs", "--envs", "Pendulum-v1", "--num-envs", "4"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    row = re.search(r"│ Pendulum-v1\s+│\s+4 │\s+([\d,]+) │\s+([\d,]+) │\s+([\d.]+)×", result.output)
    batched, sync, ratio = (float(g.replace(",", "")) for g in row.groups())
    assert abs(ratio - batched / sync) <= 0.05 * ratio + 0.05
    refused = CliRunner().invoke(app, ["bench", "envs", "--envs", "CartPole-v1"])
    assert refused.exit_code == 2 and "CartPole-v1" in refused.output and "Acrobot-v1" in refused.output
