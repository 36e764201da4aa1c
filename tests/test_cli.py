"""The command line: bad input is rejected up front (exit 2, nothing written); list shows the matrix parts."""

import pytest
from typer.testing import CliRunner

from rlbench.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--algos", "ppo,a2c"], ["a2c", "allowed", "pg", "grpo"]),
        (["--envs", "NoSuchEnv-v9"], ["NoSuchEnv-v9", "allowed", "CartPole-v1"]),
        (["--group-sizes", "1,4"], ["group sizes", "[1]", ">= 2"]),
        (["--group-sizes", "two"], ["--group-sizes", "integers", "two"]),
        (["--steps", "0"], ["--steps", "> 0", "0"]),
        (["--steps", "-5"], ["--steps", "-5"]),
        (["--seeds", "0"], ["--seeds", "> 0"]),
        (["--seed-list", "1,-2"], ["seeds", "-2"]),
        (["--jobs", "0"], ["--jobs", "> 0"]),
        (["--preset", "huge"], ["huge", "smoke", "quick", "full"]),
        (["--set", "grpo.kl_coef"], ["malformed", "grpo.kl_coef", "FIELD=VALUE"]),
        (["--set", "ppo.klcoef=0"], ["klcoef", "allowed", "kl_coef"]),
        (["--set", "dqn.lr=0.1"], ["dqn", "allowed"]),
        (["--set", "ppo.clip=-1"], ["ppo", "clip", "-1"]),
        (["--set", "ppo.gae_lambda=1.5"], ["gae_lambda", "1.5", "[0, 1]"]),
        (["--set", "ppo.advantage=magic"], ["advantage", "magic", "'gae'"]),
        (["--set", "grpo.group_size=1"], ["group_size", "G >= 2"]),
        (["--set", "epochs=fast"], ["epochs", "fast", "int"]),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, words):
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()


def test_list_shows_algorithms_envs_and_presets():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for word in ("pg", "critic", "ppo", "ppo_kl", "grpo", "CartPole-v1", "Acrobot-v1", "smoke", "quick", "full",
                 "100,000"):
        assert word in result.output
