"""KL-to-reference components: exact expected gradients by enumeration (rlbench.kl_bias), config validation,
and the reward-placed penalty in the training loop."""

from __future__ import annotations

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
