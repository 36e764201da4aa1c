"""Learning quality (slow: `python -m pytest -m slow`): presets learn what they should at the default budgets."""

import pytest

import rlbench
from rlbench.reports.stats import iqm


@pytest.mark.slow
def test_ppo_solves_cartpole_at_the_quick_budget(tmp_path) -> None:
    """`ppo` on CartPole-v1 at the quick budget (150k env steps), seeds 0–4, as `rlbench run --algos all` runs
    it: the IQM of the final evaluation return reaches Gymnasium's reward threshold, 475.

    Measured (AMD EPYC, AVX2, this commit): final returns 500, 500, 500, 500, 215.7 — seed 4 has not solved it
    at this budget, so a per-seed bound (5/5 ≥ 475) would fail; the IQM (mean of the middle three) is 500."""
    sweep = rlbench.run(
        algos="ppo", envs="CartPole-v1", seeds=5, preset="quick", out=tmp_path / "s", jobs=2, report=False
    )
    runs = sweep.runs()
    assert list(runs.status) == ["ok"] * 5
    assert iqm(runs.final_return.to_numpy()) >= 475.0
