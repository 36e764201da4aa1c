"""The claims engine: pre-registered tests whose columns differ in exactly the claim's factor, per-env and
combined verdicts (opposite signs never support, fewer than 5 runs never decide), Holm across primary tests,
infinitely noisy runs ranked rather than dropped, and a smoke sweep of the default matrix (issue 9, acc. 1–2)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from rlbench.algos.advantages import centred
from rlbench.matrix import CONTROL_GROUP_SIZES, DEFAULT_ENVS, EnvRequest, build_cells
from rlbench.reports import claims as C
from rlbench.reports import stats as S
from rlbench.reports.render import render_report

ENV_A, ENV_B = "EnvA-v0", "EnvB-v0"
RATIO = C.Test("CX", C.PRIMARY, "a", "b", "x", "x", "ratio", +1, ("lr",))


def runs_of(cells: dict[tuple[str, str], list[float]], metric: str = "x") -> pd.DataFrame:
    """Per-run table from {(env, column): values of `metric`}."""
    rows = [
        {"env": env, "algo": algo, "seed": i, metric: v}
        for (env, algo), values in cells.items()
        for i, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def spread(centre: float, n: int = 8) -> list[float]:
    """n positive values around `centre`, ±5% (deterministic)."""
    return list(centre * (1.0 + 0.05 * np.linspace(-1.0, 1.0, n)))


def evaluate(runs: pd.DataFrame, *tests: C.Test) -> pd.DataFrame:
    return C.evaluate(runs, {}, seed=0, reps=4000, tests=tests).set_index(["test", "env"])


def test_opposite_signs_in_two_envs_never_give_supported() -> None:
    # EnvA: a is 100x b; EnvB: a is half of b. The geometric mean (√50 ≈ 7) is far above 1 with a tiny p,
    # but the envs disagree in sign: the combined verdict must not be "supported".
    runs = runs_of(
        {(ENV_A, "a"): spread(100.0), (ENV_A, "b"): spread(1.0), (ENV_B, "a"): spread(0.5), (ENV_B, "b"): spread(1.0)}
    )
    row = evaluate(runs, RATIO).loc[(RATIO.name, C.COMBINED)]
    assert row.effect == pytest.approx(np.sqrt(50.0), rel=0.01) and row.p_holm < C.ALPHA
    assert row.verdict == C.INCONCLUSIVE
    assert (row.envs_support, row.envs_contradict) == (ENV_A, ENV_B)


def test_consistent_envs_support_and_reversed_contradict() -> None:
    cells = {(ENV_A, "a"): spread(2.0), (ENV_A, "b"): spread(1.0), (ENV_B, "a"): spread(3.0), (ENV_B, "b"): spread(1.0)}
    table = evaluate(runs_of(cells), RATIO)
    assert table.loc[(RATIO.name, C.COMBINED)].verdict == C.SUPPORTED
    assert table.loc[(RATIO.name, C.COMBINED)].effect == pytest.approx(np.sqrt(6.0), rel=0.01)
    assert table.loc[(RATIO.name, ENV_A)].verdict == C.SUPPORTED
    swapped = {(env, {"a": "b", "b": "a"}[col]): v for (env, col), v in cells.items()}
    assert evaluate(runs_of(swapped), RATIO).loc[(RATIO.name, C.COMBINED)].verdict == C.CONTRADICTED


def test_an_env_with_no_effect_does_not_block_the_others() -> None:
    diff = C.Test("CX", C.PRIMARY, "a", "b", "x", "x", "diff", -1, ("clip",), "mean")
    cells = {(ENV_A, "a"): [0.0] * 6, (ENV_A, "b"): [0.0] * 6}  # e.g. no drawdown on either side
    cells |= {(ENV_B, "a"): spread(0.1, 6), (ENV_B, "b"): spread(0.5, 6)}
    row = evaluate(runs_of(cells), diff).loc[(diff.name, C.COMBINED)]
    assert row.verdict == C.SUPPORTED and row.envs_support == ENV_B and row.envs_inconclusive == ENV_A


def test_a_cell_with_4_runs_is_inconclusive_n_below_5() -> None:
    cells = {(ENV_A, "a"): spread(10.0, 4), (ENV_A, "b"): spread(1.0)}
    cells |= {(ENV_B, "a"): spread(10.0), (ENV_B, "b"): spread(1.0)}
    table = evaluate(runs_of(cells), RATIO)
    assert table.loc[(RATIO.name, ENV_A)].verdict == C.SMALL_N == "inconclusive (n < 5)"
    assert table.loc[(RATIO.name, ENV_A)].ci_low > 1.0  # the interval is shown; only the verdict waits for n
    assert table.loc[(RATIO.name, ENV_B)].verdict == C.SUPPORTED
    assert table.loc[(RATIO.name, C.COMBINED)].verdict == C.SMALL_N


def test_adding_a_test_or_an_env_moves_no_other_rows_numbers() -> None:
    # Each (test, env) bootstraps from its own stream, keyed by their names, not by their positions.
    cells = {(ENV_A, "a"): spread(2.0), (ENV_A, "b"): spread(1.0), (ENV_B, "a"): spread(3.0), (ENV_B, "b"): spread(1.0)}
    numbers = ["effect", "ci_low", "ci_high", "p_value"]
    alone = evaluate(runs_of(cells), RATIO).loc[RATIO.name, numbers]
    before = C.Test("CX", C.CONTEXT, "b", "a", "x", "x (reversed)", "ratio", -1)
    pd.testing.assert_frame_equal(evaluate(runs_of(cells), before, RATIO).loc[RATIO.name, numbers], alone)
    env_c = {("EnvC-v0", "a"): spread(4.0), ("EnvC-v0", "b"): spread(1.0), ("Env0-v0", "a"): spread(5.0)}
    more = evaluate(runs_of(cells | env_c), RATIO).loc[RATIO.name, numbers]
    pd.testing.assert_frame_equal(more.loc[[ENV_A, ENV_B]], alone.loc[[ENV_A, ENV_B]])
    assert more.loc[C.COMBINED, "effect"] != alone.loc[C.COMBINED, "effect"]  # EnvC joined the pooled effect


def test_holm_across_primary_tests_and_no_verdict_for_context() -> None:
    other = C.Test("CX", C.PRIMARY, "a", "c", "x", "x", "diff", +1, ("lr",), "mean")
    context = C.Test("CX", C.CONTEXT, "a", "b", "x", "x (context)", "ratio", +1)
    cells = {(ENV_A, "a"): spread(2.0), (ENV_A, "b"): spread(1.0), (ENV_A, "c"): spread(1.99)}
    table = evaluate(runs_of(cells), RATIO, other, context)
    combined = table.xs(C.COMBINED, level="env")
    p = combined.loc[[RATIO.name, other.name], "p_value"].to_numpy()
    assert combined.loc[[RATIO.name, other.name], "p_holm"].to_numpy() == pytest.approx(S.holm(p))
    assert combined.loc[other.name].verdict == C.INCONCLUSIVE  # a 0.5% difference, within the noise
    assert table.loc[(context.name, ENV_A)].verdict == "" and np.isnan(combined.loc[context.name].p_holm)


def test_infinitely_noisy_runs_are_ranked_not_dropped() -> None:
    noise = C.Test("CX", C.PRIMARY, "a", "b", "noise", "noise", "poi", +1)
    cells = {(ENV_A, "a"): [np.inf, np.inf, 50.0, 60.0, 70.0], (ENV_A, "b"): [1.0, 2.0, 3.0, 4.0, 5.0]}
    row = evaluate(runs_of(cells, "noise"), noise).loc[(noise.name, ENV_A)]
    assert (row.n_a, row.n_inf_a, row.n_inf_b) == (5, 2, 0)
    assert row.effect == 1.0 and row.verdict == C.SUPPORTED


def test_c3_shows_the_divergence_rate_of_runs_that_have_no_final_return() -> None:
    # ppo_noclip diverged on Pendulum in all 10 seeds of the full preset: no final return, so the collapse and
    # return tests have no values for it; the divergence rate counts every such run.
    divergence = next(t for t in C.TESTS if t.metric == "diverged")
    assert (divergence.claim, divergence.column_a, divergence.column_b) == ("C3", "ppo", "ppo_noclip")
    runs = runs_of({(ENV_A, "ppo"): [0.0] * 5, (ENV_A, "ppo_noclip"): [1.0] * 5}, "diverged")
    runs["final_return"] = np.where(runs.algo == "ppo", 100.0, np.nan)
    row = evaluate(runs, divergence).loc[(divergence.name, ENV_A)]
    assert (row.n_a, row.n_b, row.effect) == (5, 5, -1.0)


def test_unmeasured_metric_is_inconclusive_and_outside_the_family() -> None:
    memory = C.Test("CX", C.PRIMARY, "a", "b", "update_memory_bytes", "memory", "ratio", -1)
    cells = {(ENV_A, "a"): spread(1.0), (ENV_A, "b"): spread(2.0)}
    row = evaluate(runs_of(cells), memory).loc[(memory.name, C.COMBINED)]
    assert row.verdict == C.INCONCLUSIVE and "not measured" in row.note and np.isnan(row.p_holm)


def test_differs_in_names_exactly_the_claim_factor_on_every_default_env() -> None:
    cells = build_cells(["all"], None, "smoke", [0], None, [2, 4, 8, 16], [])
    configs = {(c.env_id, c.algo.name): c.to_dict()["algo"] for c in cells}
    for t in (t for t in C.TESTS if t.role == C.PRIMARY):
        for env in DEFAULT_ENVS:
            if t.envs == "textgen" and "TextGen" not in env:
                continue
            assert C.differs_in(configs[(env, t.column_a)], configs[(env, t.column_b)]) == ", ".join(t.factor), (
                t.name,
                env,
            )


def test_centred_returns_subtract_the_batch_mean_of_valid_steps() -> None:
    returns = torch.tensor([[3.0, 1.0, 9.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # valid: 3, 1, 2 → mean 2
    assert torch.equal(centred(returns, mask), torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]))


def test_a_control_takes_the_settings_of_the_preset_it_ablates() -> None:
    cells = build_cells(["grpo", "grpo_critic"], None, "smoke", [0], None, [4], [("grpo.lr", 3e-4)])
    assert {(c.env_id, c.algo.lr) for c in cells} == {(env, 3e-4) for env in DEFAULT_ENVS}
    textgen = {c.algo.name: c.algo.kl_coef for c in cells if "TextGen" in c.env_id}
    assert textgen == {"grpo-g4[lr=0.0003]": 1.0, "grpo_critic-g4[lr=0.0003]": 1.0}  # TextGen's grpo β too


def test_the_default_matrix_has_every_column_the_claims_compare() -> None:
    cells = build_cells(["all"], [EnvRequest("CartPole-v1")], "smoke", [0], None, [2, 4, 8, 16], [])
    columns = {c.algo.name for c in cells}
    assert set(C.claim_columns()) <= columns
    controls = sorted(c for c in columns if c.startswith("grpo_critic"))
    assert controls == sorted(f"grpo_critic-g{g}" for g in CONTROL_GROUP_SIZES)
    assert C.serves("grpo") == ["C5"] and C.serves("pg") == ["C1", "C2"] and C.serves("rloo") == []


def test_rlbench_list_shows_the_claims_each_preset_serves() -> None:
    from typer.testing import CliRunner

    from rlbench.cli import app

    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert "C1, C2" in rows["pg"] and "C5" in rows["grpo_critic"] and "C3" in rows["ppo_noclip"]


def test_interval_ends_are_stable_across_bootstrap_seeds_at_reps() -> None:
    """Measured: at C.REPS the interval ends of an n = 5 vs 5 IQM ratio move by < 6% of the interval's width
    across bootstrap seeds (2,000 resamples: ~13%), so 2 printed significant digits hold."""
    rng = np.random.default_rng(5)
    a, b = np.exp(rng.normal(0.0, 0.5, 5)), np.exp(rng.normal(0.3, 0.5, 5))
    dists = [S.env_bootstrap([(a, b)], "ratio", "IQM", C.REPS, seed)[:, 0] for seed in range(5)]
    ends = np.array([S.percentile_interval(d) for d in dists])
    width = float(np.mean(ends[:, 1] - ends[:, 0]))
    assert float(np.max(ends.max(axis=0) - ends.min(axis=0))) < 0.06 * width


# ----------------------------------------------------------------------------------------------------------
# Acceptance 1: a smoke sweep of --algos all


@pytest.fixture(scope="module")
def smoke_claims(tmp_path_factory) -> pd.DataFrame:
    """claims.csv of a smoke sweep of the default matrix (1 seed, G ∈ CONTROL_GROUP_SIZES), rendered once."""
    out = tmp_path_factory.mktemp("claims") / "smoke"
    groups = ",".join(map(str, CONTROL_GROUP_SIZES))
    args = ["--preset", "smoke", "--algos", "all", "--seeds", "1", "--group-sizes", groups, "--jobs", "2"]
    cli = [sys.executable, "-m", "rlbench.cli", "run", *args, "--out", str(out), "--no-report"]
    subprocess.run(cli, check=True, capture_output=True)  # this interpreter's rlbench, not one on PATH
    tables = render_report(out) / "tables"
    table = pd.read_csv(tables / "claims.csv", keep_default_na=False)
    records = json.loads((tables / "claims.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    assert [(r["test"], r["env"]) for r in records] == list(zip(table.test, table.env))
    return table


def test_smoke_sweep_has_a_primary_row_per_env_and_combined_naming_the_factor(smoke_claims: pd.DataFrame) -> None:
    required = {"claim", "role", "env", "column_a", "column_b", "differs_in", "metric", "effect"}
    assert required | {"ci_low", "ci_high", "n_a", "n_b", "verdict"} <= set(smoke_claims.columns)
    primary = smoke_claims[smoke_claims.role == C.PRIMARY]
    for claim in ("C1", "C2", "C3", "C5"):
        rows = primary[primary.claim == claim]
        assert set(rows.env) == {*DEFAULT_ENVS, C.COMBINED}, claim
        factors = {t.name: ", ".join(t.factor) for t in C.TESTS}
        assert (rows.differs_in == rows.test.map(factors)).all(), rows[["test", "env", "differs_in"]]
    assert set(primary.verdict) <= {C.SMALL_N, C.INCONCLUSIVE}  # 1 seed decides nothing
    assert set(smoke_claims[smoke_claims.role == C.CONTEXT].verdict) == {""}
