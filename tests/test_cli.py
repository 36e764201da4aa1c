"""The command line: bad input is rejected up front (exit 2, nothing written); list shows the matrix parts."""

import subprocess
import sys

import pytest
from runargs import assert_refused, run_args
from typer.testing import CliRunner

from rlbench.cli import app

runner = CliRunner()

ONE_PG_RUN = run_args(algos="pg", envs="CartPole-v1", seeds=1)
"""The smallest sweep: one pg run on CartPole, no report (add --out and anything else)."""


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
        (["--algos", "pg,pg"], ["column 'pg'", "twice"]),
        (["--algos", "ppo,ppo[clip=0.2]"], ["column 'ppo'", "twice", "ppo[clip=0.2]"]),
        (["--algos", "ppo[foo=1]"], ["foo", "unknown field", "allowed", "clip"]),
        (["--algos", "ppo[clip=none"], ["unbalanced", "ppo[clip=none"]),
        (["--seed-list", "1,1"], ["seed", "1", "twice"]),
        (["--group-sizes", "4,4"], ["group size", "4", "twice"]),
        (["--set", "pg.value_epochs=3"], ["value_epochs", "needs a critic"]),
        (["--set", "ppo.clip=none", "--set", "ppo.clip_high=0.3"], ["clip_high", "needs a clip"]),
        (["--seeds", "1000000000"], ["1,000,000,000 seeds", "at most 100,000"]),
        (["--seed-list", ",".join(map(str, range(100_001)))], ["100,001 seeds", "at most 100,000"]),
        (["--algos", "all", "--seeds", "10000"], ["cells", "at most 100,000"]),
        (
            ["--algos", "grpo", "--envs", "Pendulum-v1", "--group-sizes", "100000"],
            ["grpo-g100000 on Pendulum-v1", "400,000", "budget of 3,000"],
        ),
        (["--algos", "ppo", "--steps", "100"], ["ppo on", "512 env steps", "budget of 100"]),
        (["--time-limit", "nan"], ["--time-limit", "finite", "nan"]),
        (["--time-limit", "inf"], ["--time-limit", "finite", "inf"]),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, words):
    assert_refused(tmp_path / "sweep", args, words)


def test_list_shows_algorithms_envs_and_presets():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for word in (
        "pg",
        "critic",
        "ppo",
        "ppo_kl",
        "grpo",
        "CartPole-v1",
        "Acrobot-v1",
        "smoke",
        "quick",
        "full",
        "100,000",
        "ratio (no clip)",  # ppo_noclip's policy loss
    ):
        assert word in result.output


def test_check_env_passes_a_good_env():
    result = runner.invoke(app, ["check-env", "CartPole-v1"])
    assert result.exit_code == 0, result.output
    assert "seeded reset reproducible" in result.output and "FAIL" not in result.output


def test_a_locked_sweep_directory_is_refused(tmp_path):
    from rlbench import store

    with store.Sweep(tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "rlbench.cli", *ONE_PG_RUN, "--out", str(tmp_path)], capture_output=True, text=True
        )
    assert result.returncode == 2
    assert "another rlbench run is writing" in result.stderr
    assert not (tmp_path / "CartPole-v1").exists()


def test_resuming_with_a_different_config_is_refused_unless_forced(tmp_path):
    """A changed budget keeps the column's name (and so its run directories): resuming is refused. A changed
    setting is a column of its own (`pg[lr=0.01]`) beside the old one."""
    args = [*ONE_PG_RUN, "--out", str(tmp_path)]
    assert runner.invoke(app, [*args, "--steps", "300"]).exit_code == 0
    summary = tmp_path / "CartPole-v1" / "pg" / "seed0" / "summary.json"
    before = summary.read_text()
    refused = runner.invoke(app, [*args, "--steps", "400"])
    assert refused.exit_code == 2 and "different config" in refused.output
    assert summary.read_text() == before
    forced = runner.invoke(app, [*args, "--steps", "400", "--force-new"])
    assert forced.exit_code == 0, forced.output
    assert '"steps": 400' in (summary.parent / "config.json").read_text()
    ablated = runner.invoke(app, [*args, "--steps", "400", "--set", "pg.lr=0.01"])
    assert ablated.exit_code == 0, ablated.output
    assert '"lr": 0.01' in (tmp_path / "CartPole-v1" / "pg[lr=0.01]" / "seed0" / "config.json").read_text()
    assert '"steps": 400' in (summary.parent / "config.json").read_text()


def test_an_output_path_that_is_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a directory")
    result = runner.invoke(app, [*ONE_PG_RUN, "--out", str(target / "sweep")])
    assert result.exit_code == 2
    assert "cannot write to the sweep directory" in " ".join(result.output.split())


def test_matrix_file_sets_envs_budgets_and_overrides_and_flags_win(tmp_path):
    spec = tmp_path / "matrix.toml"
    spec.write_text(
        'preset = "smoke"\nalgos = ["pg", "grpo"]\ngroup_sizes = [2]\nseed_list = [4]\n'
        '[set]\n"grpo.kl_coef" = 0.0\npg = { lr = 0.002 }\n'
        '[columns.pg_fast]\nalgo = "pg"\nlr = 0.01\n'
        '[[envs]]\nid = "CartPole-v1"\nsteps = 300\n'
        '[[envs]]\nid = "FrozenLake-v1"\nkwargs = { is_slippery = false }\nsteps = 200\n'
    )
    out = tmp_path / "sweep"
    result = runner.invoke(
        app, ["run", "--matrix", str(spec), "--out", str(out), "--set", "pg.lr=0.003", "--no-report"]
    )
    assert result.exit_code == 0, result.output
    import json

    sweep = json.loads((out / "sweep.json").read_text())
    cells = {(c["env_id"], c["algo"]["name"]): c for c in sweep["cells"]}
    pg, grpo = "pg[lr=0.003]", "grpo-g2[kl_coef=0.0]"  # columns named by what differs from their preset
    assert set(cells) == {(e, a) for e in ("CartPole-v1", "FrozenLake-v1") for a in (pg, grpo, "pg_fast")}
    assert cells["FrozenLake-v1", pg]["env_kwargs"] == {"is_slippery": False}
    assert cells["FrozenLake-v1", pg]["steps"] == 200 and cells["CartPole-v1", pg]["steps"] == 300
    assert cells["CartPole-v1", grpo]["algo"]["kl_coef"] == 0.0
    assert cells["CartPole-v1", pg]["algo"]["lr"] == 0.003  # the flag overrides the file
    assert cells["CartPole-v1", "pg_fast"]["algo"]["lr"] == 0.01  # a named column's own settings win
    assert all(c["seed"] == 4 for c in cells.values())


@pytest.mark.parametrize(
    "text, words",
    [
        ('algos = ["pg"]\nbudget = 3\n', ["unknown key", "budget", "allowed"]),
        ('[[envs]]\nname = "CartPole-v1"\n', ["env entry", "id"]),
        ("algos = [\n", ["not valid TOML"]),
        ('algos = "ppo"\n', ["algos", "'ppo'", "list of names"]),
        ('seeds = "3"\n', ["seeds", "'3'", "positive integer"]),
        ("seed_list = [1.5]\n", ["seed_list", "1.5", "list of integers"]),
        ("steps = 1.5\n", ["steps", "1.5", "positive integer"]),
        ('[[envs]]\nid = "CartPole-v1"\nkwargs = 3\n', ["env entry", "kwargs"]),
        ('[columns.ppo]\nalgo = "ppo"\nclip = "none"\n', ["column name 'ppo'", "reserved"]),
        ("[columns.wide]\nclip = 0.3\n", ["columns.wide", "algo = PRESET"]),
        ('[columns.wide]\nalgo = "ppo"\nclipp = 0.3\n', ["clipp", "unknown field"]),
    ],
)
def test_bad_matrix_files_are_clear_errors(tmp_path, text, words):
    spec = tmp_path / "m.toml"
    spec.write_text(text)
    result = runner.invoke(app, ["run", "--matrix", str(spec), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    for word in words:
        assert word in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_a_full_disk_is_a_clear_error_and_keeps_finished_runs(tmp_path, monkeypatch):
    import errno

    from rlbench import store

    real = store.write_json
    configs = []

    def full_after_first_run(path, data):
        if path.name == "config.json":
            configs.append(path)
            if len(configs) > 1:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(store, "write_json", full_after_first_run)
    out = tmp_path / "sweep"
    args = run_args(out, algos="pg,critic", envs="CartPole-v1", seeds=1, steps=300, jobs=1)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "No space left on device" in message and "finished runs there are kept" in message
    finished = list(out.glob("**/summary.json"))
    assert len(finished) <= 1
    monkeypatch.setattr(store, "write_json", real)
    before = {p: p.read_bytes() for p in finished}
    assert runner.invoke(app, args).exit_code == 0
    assert all(p.read_bytes() == b for p, b in before.items())
    assert len(list(out.glob("**/summary.json"))) == 2
