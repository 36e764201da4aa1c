"""The sweep progress state, its cost-weighted ETA fed synthetic start/finish events (no Rich, no runs), and the
order runs start in."""

import math

import pandas as pd
import pytest

from rlbench.display import claim_verdicts, mean_std, number
from rlbench.matrix import build_cells, dispatch_order
from rlbench.progress import CostModel, RunEnd, SweepProgress, Work, column_family, schedule_span


def test_column_family_is_the_leading_name() -> None:
    assert [column_family(c) for c in ("grpo-g16", "ppo[clip=none]", "ppo_kl", "pg")] == ["grpo", "ppo", "ppo_kl", "pg"]


def test_cost_model_measured_pair_and_fallbacks() -> None:
    model = CostModel()
    assert not model.measured
    with pytest.raises(ValueError):
        model.rate("A", "pg")
    model.observe(Work("A", "pg", 1000), 2.0)
    model.observe(Work("A", "ppo", 1000), 6.0)
    model.observe(Work("B", "pg", 2000), 1.0)
    assert model.rate("A", "pg") == pytest.approx(0.002)
    # ppo costs 0.006 / 0.004 = 1.5x env A's rate; env B's rate is 1 / 2000
    assert model.rate("B", "ppo") == pytest.approx(0.0005 * 1.5)
    # pg is 0.002 / 0.004 = 0.5x on A and 1x on B: geometric mean sqrt(0.5); env C unseen: the sweep's rate
    assert model.rate("C", "pg") == pytest.approx(9.0 / 4000 * math.sqrt(0.5))
    assert model.rate("C", "grpo") == pytest.approx(9.0 / 4000)
    assert model.expected(Work("B", "ppo", 4000)) == pytest.approx(3.0)


def test_cost_model_separates_per_run_overhead() -> None:
    model = CostModel()
    model.observe(Work("A", "pg", 1000), 7.0, train_seconds=2.0)
    model.observe(Work("A", "pg", 3000), 9.0, train_seconds=6.0)
    assert model.overhead == pytest.approx(4.0)
    assert model.rate("A", "pg") == pytest.approx(8.0 / 4000)
    assert model.expected(Work("B", "pg", 500)) == pytest.approx(4.0 + 1.0)  # unseen env: the sweep's rate


def test_schedule_span_deals_runs_to_the_first_free_worker() -> None:
    assert schedule_span(2, [3.0], [4.0, 4.0, 1.0]) == pytest.approx(7.0)
    assert schedule_span(1, [], [1.0, 2.0]) == pytest.approx(3.0)
    assert schedule_span(3, [], []) == 0.0


def simulate(works: dict[str, Work], seconds: dict[str, float]) -> list[tuple[float, float | None]]:
    """One worker runs the works in order taking `seconds` each; (true time left, ETA) after each finish."""
    progress, now, points = SweepProgress(works, workers=1), 0.0, []
    total = sum(seconds.values())
    for key in works:
        progress.start([key], now)
        now += seconds[key]
        progress.finish(key, now, RunEnd("ok"))
        points.append((total - now, progress.eta(now)))
    return points


def test_eta_weights_runs_by_budget_and_learns_each_envs_speed() -> None:
    # 4 cheap runs first (1 s), then 4 runs with 5x the budget at the same speed, then 4 on a slower env
    works = {f"a{i}": Work("A", "pg", 1000) for i in range(4)}
    works |= {f"b{i}": Work("B", "pg", 5000) for i in range(4)}
    works |= {f"c{i}": Work("C", "ppo", 1000) for i in range(4)}
    seconds = {k: {"A": 1.0, "B": 5.0, "C": 3.0}[w.env] for k, w in works.items()}
    progress = SweepProgress(works, workers=1)
    assert progress.eta(0.0) is None
    points = simulate(works, seconds)
    # after the first run: budget-weighted (4 A-like + 20 for B + 4 for C = 3 + 20 + 4) rather than 11 x 1 s
    assert points[0][1] == pytest.approx(27.0)
    # once a run of each env has finished the estimate is exact
    for truth, eta in points[8:]:
        assert eta == pytest.approx(truth)
    assert all(eta is not None for _, eta in points)


def test_eta_counts_what_running_runs_have_left_and_parallel_workers() -> None:
    works = {k: Work("A", "pg", 1000) for k in "abcde"}
    progress = SweepProgress(works, workers=2)
    progress.start(["a"], 0.0)
    progress.start(["b"], 0.0)
    progress.finish("a", 2.0, RunEnd("ok"))  # 2 s per run
    progress.start(["c"], 2.0)
    # at t=3: b has ~0 left (expected 2, ran 3), c has 1 left; d and e wait: slots (0, 1) → d: 2, e: 3
    assert progress.eta(3.0) == pytest.approx(3.0)
    assert progress.pending == ["d", "e"]
    assert (progress.done_count("A"), progress.total("A")) == (1, 5)


def test_a_seed_batchs_runs_share_its_time_and_its_worker() -> None:
    works = {k: Work("A", "pg", 1000) for k in "abcdef"}
    progress = SweepProgress(works, workers=1)
    progress.start(["a", "b"], 0.0)
    assert [progress.finish(k, 4.0, RunEnd("ok")).seconds for k in "ab"] == [2.0, 2.0]  # 4 s for two runs
    progress.start(["c", "d"], 4.0)
    # at t=5: the running batch has 2 + 2 − 1 = 3 s left, then e and f take 2 s each on the one worker
    assert progress.eta(5.0) == pytest.approx(7.0)


def test_skipped_and_failed_runs() -> None:
    works = {k: Work("A", "pg", 1000) for k in "abc"}
    progress = SweepProgress(works, workers=1)
    progress.skip("a")
    progress.start(["b"], 0.0)
    progress.finish("b", 0.5, RunEnd("failed"))
    assert progress.eta(0.5) == pytest.approx(0.5)  # a failed run's time still counts: never "unknown" again
    assert progress.done_count() == 2 and progress.pending == ["c"]


def test_number_precision() -> None:
    assert [number(v) for v in (142.53, -85.31, 0.8734, 0.0, math.nan)] == ["142.5", "-85.3", "0.873", "0.000", "–"]
    assert mean_std(pd.Series([0.8, 0.9]), 3) == "0.850 ± 0.050"
    assert mean_std(pd.Series([100.0, 200.0])) == "150.0 ± 50.0"


TODAYS_CLAIMS = [
    ("C1", "test", None, "supported"),
    ("C1", "context", None, "contradicted"),
    ("C2", "test", None, "supported"),
    ("C2", "test", None, "contradicted"),
    ("C3", "test", None, "inconclusive"),
]
"""Today's claims table: role test/context, one row per test, no env column."""
PER_ENV_CLAIMS = [
    ("C1", "primary", "CartPole-v1", "contradicted"),
    ("C1", "primary", "combined", "supported"),
    ("C2", "primary", "combined", "inconclusive (n < 5)"),
    ("C2", "primary", "combined", "supported"),
    ("C3", "context", "combined", "supported"),
]
"""The rewritten engine's: role primary/context, per-env rows plus a combined row per test."""


@pytest.mark.parametrize(
    "rows, expected",
    [
        (TODAYS_CLAIMS, {"C1": "supported", "C2": "contradicted", "C3": "inconclusive"}),
        (PER_ENV_CLAIMS, {"C1": "supported", "C2": "inconclusive (n < 5)"}),
    ],
)
def test_claim_verdicts_from_the_claims_table(tmp_path, rows, expected) -> None:
    frame = pd.DataFrame(rows, columns=["claim", "role", "env", "verdict"])
    if frame.env.isna().all():
        frame = frame.drop(columns="env")
    path = tmp_path / "claims.csv"
    frame.to_csv(path, index=False)
    assert claim_verdicts(path) == expected


def test_a_run_without_a_final_return_is_nan_not_a_crash(tmp_path) -> None:
    """An env_nan run's summary.json holds null (the store's NaN) as its final return."""
    from rlbench import store
    from rlbench.display import run_end
    from rlbench.spec import Status
    from rlbench.store import Outcome

    store.write_json(tmp_path / store.SUMMARY, {"final_return": math.nan, "wall_time_s": 1.5, "status": "env_nan"})
    end = run_end(Outcome(spec=None, run_dir=tmp_path, status=Status.ENV_NAN))
    assert end.status == "env_nan" and math.isnan(end.final_return) and end.train_seconds == 1.5


def test_dispatch_order_measures_every_env_and_column_first_and_keeps_every_cell():
    cells = build_cells(["pg", "ppo", "grpo"], None, "smoke", [0, 1], None, [2, 4], [])
    order = dispatch_order(cells)
    assert sorted(map(repr, order)) == sorted(map(repr, cells))
    envs, columns = {c.env_id for c in cells}, {c.algo.name for c in cells}
    first = order[: len(envs) * len(columns)]
    assert {(c.env_id, c.algo.name) for c in first} == {(e, a) for e in envs for a in columns}
    assert {c.env_id for c in order[: len(envs)]} == envs  # the first runs already see every env


def test_pending_runs_are_dealt_to_workers_in_the_seed_batches_they_will_run_in() -> None:
    def eta(cells: str) -> float | None:
        works = {"m": Work("A", "pg", 1000, "M")} | {f"x{i}": Work("A", "pg", 1000, c) for i, c in enumerate(cells)}
        progress = SweepProgress(works, workers=2, seed_batch=4)
        progress.start(["m"], 0.0)
        progress.finish("m", 1.0, RunEnd("ok"))  # 1 s per run
        return progress.eta(1.0)

    assert eta("XXXX") == pytest.approx(4.0)  # one batch of four on one worker, the other idle
    assert eta("XXYY") == pytest.approx(2.0)  # two batches of two, one per worker
