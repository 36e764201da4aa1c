"""`rlbench bench textgen` says what its numbers are: the ratio column's header matches its value, and the
SFT line says whether the reference model was trained now or loaded from the cache."""

import re

from typer.testing import CliRunner

from rlbench.cli import app
from rlbench.envs.textgen_bench import benchmark, sft_message


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
