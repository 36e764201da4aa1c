"""KL-to-reference components: exact expected gradients by enumeration (rlbench.kl_bias), config validation,
and the reward-placed penalty in the training loop."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from rlbench import kl_bias
from rlbench.algos import PRESETS
from rlbench.algos.config import AlgoConfig
from rlbench.cli import app
from rlbench.rollout import Trajectories
from rlbench.train import penalised

TOL = 1e-10


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str, str, str], kl_bias.Row]:
    return {(r.case, r.estimator, r.placement, r.sampling): r for r in kl_bias.table()}


@pytest.mark.parametrize("case", list(kl_bias.CASES))
def test_k1_in_reward_follows_the_reverse_kl_of_the_whole_sequence(rows, case) -> None:
    row = rows[case, "k1", "reward", "on-policy"]
    assert row.err_reverse < TOL
    assert row.err_forward > 0.1


def test_bandit_k2_in_loss_follows_reverse_and_k3_in_loss_follows_forward_kl(rows) -> None:
    k2, k3 = rows["bandit", "k2", "loss", "on-policy"], rows["bandit", "k3", "loss", "on-policy"]
    assert k2.err_reverse < TOL and k2.err_forward > 0.1
    assert k3.err_forward < TOL and k3.err_reverse > 0.1
    assert (k2.follows, k3.follows) == ("rev", "fwd")


@pytest.mark.parametrize("case", list(kl_bias.CASES))
def test_k1_in_loss_has_zero_expected_gradient(rows, case) -> None:
    assert rows[case, "k1", "loss", "on-policy"].norm < TOL


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_off_policy_samples_bias_a_loss_term_and_the_weight_restores_it_on_a_bandit(rows, estimator) -> None:
    assert rows["bandit", estimator, "loss", "off-policy"].err_on_policy > 0.01
    assert rows["bandit", estimator, "loss", "off+weight"].err_on_policy < TOL


def test_a_per_token_loss_is_only_a_partial_gradient_of_the_sequence_kl(rows) -> None:
    # k2 per token follows ∇KL(π‖π_ref) for one token but misses the KL of later tokens in a sequence.
    assert rows["2 tokens", "k2", "loss", "on-policy"].err_reverse > 0.05
    # the per-token weight π_t/π_old,t does not reweight the prefix, so it only reduces the off-policy error.
    weighted, raw = rows["2 tokens", "k3", "loss", "off+weight"], rows["2 tokens", "k3", "loss", "off-policy"]
    assert 0.0 < weighted.err_on_policy < raw.err_on_policy


def test_kl_bias_command_prints_the_table() -> None:
    result = CliRunner().invoke(app, ["kl-bias"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "bandit" in result.output and "2 tokens" in result.output and "off+weight" in result.output
    assert "fwd" in result.output and "zero" in result.output


def test_presets_state_their_kl_form() -> None:
    assert (PRESETS["ppo_kl"].kl_estimator, PRESETS["ppo_kl"].kl_placement) == ("k1", "reward")
    assert (PRESETS["grpo"].kl_estimator, PRESETS["grpo"].kl_placement) == ("k3", "loss")


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(kl_estimator="k1", kl_placement="loss"), ["k1", "zero expected gradient"]),
        (dict(kl_placement="reward", kl_importance_weight=True), ["kl_importance_weight", "reward"]),
        (dict(kl_estimator="k4"), ["kl_estimator", "'k4'", "'k3'"]),
        (dict(kl_placement="advantage"), ["kl_placement", "'advantage'", "'loss'"]),
    ],
)
def test_invalid_kl_settings_are_refused(changes, words) -> None:
    with pytest.raises(ValueError) as err:
        AlgoConfig(name="x", **changes)
    assert all(w in str(err.value) for w in words)


def test_reward_penalty_is_added_to_valid_steps_only() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    traj = Trajectories(
        inputs={},
        rewards=torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]),
        terminated=torch.zeros(2, 3),
        ends=torch.ones(2, 3),
        mask=mask,
        last_inputs=None,
        episode_returns=[1.0, 2.0],
    )
    out = penalised(traj, torch.tensor([0.5, 0.25, 1.0]), kl_coef=2.0)
    assert torch.equal(out.rewards, torch.tensor([[-1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]))
    assert out.episode_returns == [1.0, 2.0]


# ----------------------------------------------------------------------------------------------------------
# The β axis and the early-stopping comparison


def test_kl_coefs_make_one_column_per_beta_for_every_preset_with_a_kl_term() -> None:
    from rlbench.matrix import EnvRequest, build_cells

    sets = [("ppo_kl-b0.3.lr", 0.002), ("grpo.kl_coef", 5.0)]
    cells = build_cells(
        ["ppo", "ppo_kl", "grpo"], [EnvRequest("CartPole-v1")], "smoke", [0], None, [4, 8], sets, [0, 0.3]
    )
    by_name = {c.algo.name: c.algo for c in cells}
    tuned = "ppo_kl-b0.3[lr=0.002]"  # a setting beyond the β axis names the column (issue 15)
    assert sorted(by_name) == sorted(
        ["ppo", "ppo_kl-b0", tuned, "grpo-g4-b0", "grpo-g4-b0.3", "grpo-g8-b0", "grpo-g8-b0.3"]
    )
    assert by_name[tuned].kl_coef == 0.3 and by_name[tuned].lr == 0.002
    assert by_name["ppo_kl-b0"].lr == by_name["ppo"].lr and by_name["grpo-g8-b0"].kl_coef == 0.0  # β beats --set


@pytest.mark.parametrize(
    "args, words",
    [
        (["--kl-coefs", "0,big"], ["--kl-coefs", "'big'", "not a number"]),
        (["--kl-coefs", "0,-0.1"], ["β", "-0.1", ">= 0"]),
        (["--kl-coefs", "0.1,0.1"], ["KL coefficient", "0.1", "twice"]),
        (["--set", "ppo_kl.kl_estimator=k4"], ["kl_estimator", "'k4'", "'k1'"]),
        (["--set", "grpo.kl_estimator=k1"], ["grpo", "k1", "zero expected gradient"]),
    ],
)
def test_bad_kl_input_exits_2_naming_it(tmp_path, args, words) -> None:
    out = tmp_path / "sweep"
    cmd = ["run", "--preset", "smoke", "--algos", "ppo_kl,grpo", "--envs", "CartPole-v1", "--out", str(out), *args]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert all(w in message for w in words), message
    assert not out.exists()


def test_first_crossing_interpolates_along_the_trajectory() -> None:
    from rlbench.reports.stats import first_crossing

    kl, gold = [0.0, 1.0, 3.0, 2.0, 5.0], [0.5, 0.7, 0.6, 0.9, 0.4]
    assert first_crossing(kl, gold, 0.0) == 0.5
    assert first_crossing(kl, gold, 0.5) == pytest.approx(0.6)
    assert first_crossing(kl, gold, 2.0) == pytest.approx(0.65)  # the first crossing, not the later visit
    assert math.isnan(first_crossing(kl, gold, 6.0)) and math.isnan(first_crossing(kl, gold, math.nan))


def test_each_penalised_column_is_compared_with_its_beta_zero_sibling() -> None:
    from rlbench.reports import claims as C
    from rlbench.reports.data import kl_siblings

    env = "rlbench/TextGen-v0"
    base = dataclasses.asdict(PRESETS["ppo_kl"])
    configs = {
        (env, "ppo"): {**base, "name": "ppo", "kl_coef": 0.0},
        (env, "ppo_kl"): {**base, "kl_coef": 1.0},
        (env, "ppo_kl-b0"): {**base, "name": "ppo_kl-b0", "kl_coef": 0.0, "lr": 0.002},
        (env, "ppo_kl-b0.3"): {**base, "name": "ppo_kl-b0.3", "kl_coef": 0.3, "lr": 0.002},
    }
    assert kl_siblings(configs) == {(env, "ppo_kl"): "ppo", (env, "ppo_kl-b0.3"): "ppo_kl-b0"}
    tests = C.early_stop_tests(configs)
    assert [(t.column_a, t.column_b, t.metric_b) for t in tests] == [("ppo_kl-b0.3", "ppo_kl-b0", "early_stop_gold")]
    assert all(t.claim == "C4" and t.role == C.PRIMARY and t.factor == ("kl_coef",) for t in tests)


def test_a_beta_sweep_on_textgen_reports_the_frontier_and_the_early_stopping_test(tmp_path) -> None:
    out = tmp_path / "sweep"
    cmd = ["run", "--preset", "smoke", "--algos", "ppo_kl", "--kl-coefs", "0,1", "--envs", "rlbench/TextGen-v0"]
    result = CliRunner().invoke(app, [*cmd, "--seeds", "2", "--jobs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (out / "rlbench__TextGen-v0").iterdir()} == {"ppo_kl-b0", "ppo_kl-b1"}
    report = (out / "report" / "report.md").read_text()
    assert "## KL penalty vs early stopping" in report and "figures/kl_frontier.png" in report
    frontier = pd.read_csv(out / "report" / "tables" / "kl_frontier.csv")
    assert list(frontier.beta) == [0.0, 1.0] and list(frontier.n) == [2, 2]
    assert frontier.early_stop_gold.iloc[1] > 0  # measured on ppo_kl-b0's trajectory at ppo_kl-b1's final KL
    claims = pd.read_csv(out / "report" / "tables" / "claims.csv")
    row = claims[(claims.column_a == "ppo_kl-b1") & (claims.env == "combined")].iloc[0]
    assert row.claim == "C4" and row.column_b == "ppo_kl-b0" and row.differs_in == "kl_coef" and row.n_a == 2


def test_the_training_loss_weight_is_the_detached_ratio_the_enumeration_uses() -> None:
    from rlbench.algos.losses import kl_estimate, kl_loss

    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    ref, old, mask = torch.tensor([-1.5, -1.0]), torch.tensor([-1.2, -1.8]), torch.ones(2)
    (grad,) = torch.autograd.grad(kl_loss(logp, ref, old, mask, "k3", True), logp)
    (plain,) = torch.autograd.grad(kl_estimate(logp, ref, "k3").sum(), logp)
    assert torch.allclose(grad, torch.exp(logp - old).detach() * plain / 2)
