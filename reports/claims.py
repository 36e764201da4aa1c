"""The five claims (docs/claims-and-metrics.md) as data: a table of tests, each two matrix columns, a per-run
metric and a claimed direction, evaluated by one function into one row per (test, env) plus one combined row per test.

Per env the effect is a ratio or difference of a statistic of the two columns' runs, or the probability of
improvement P(A > B) for rank-based metrics, with a 95% percentile interval of a two-sample bootstrap. The
combined effect pools the per-env effects (geometric mean of ratios, mean otherwise) under an env-stratified
bootstrap. A primary test's combined verdict is Holm–Bonferroni corrected across the report's primary tests and
needs ≥ 5 finished runs per side in every env and every env's estimate on the same side of "no effect".
Context tests show estimates and intervals only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rlbench.matrix import CONTROL_GROUP_SIZES
from rlbench.reports import stats as S
from rlbench.reports.data import is_textgen, kl_siblings

REPS = 20_000
"""Bootstrap resamples per test: interval ends repeat to the printed 2 significant digits across bootstrap seeds
(tests/test_claims.py measures it)."""
ALPHA = 0.05
"""Family-wise error rate of the primary tests (Holm–Bonferroni)."""
MIN_RUNS = 5
"""Finished runs each side needs in an env before a verdict there."""

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
SMALL_N = f"inconclusive (n < {MIN_RUNS})"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, SMALL_N)
PRIMARY, CONTEXT, COMBINED = "primary", "context", "combined"


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str


CLAIMS = (
    Claim("C1", 'Raw ("absolute") rewards give high-variance gradient estimates.'),
    Claim("C2", "A learned critic baseline lowers that variance without biasing the gradient."),
    Claim("C3", "PPO's clip keeps each update small and training stable."),
    Claim("C4", "A KL penalty gives more gold reward than stopping early at the same KL to the reference."),
    Claim(
        "C5",
        "GRPO drops the critic (less memory and compute per update) and gets its baseline from a group of G "
        "samples; larger G lowers variance but costs more samples.",
    ),
)


@dataclass(frozen=True)
class Test:
    """One comparison of column_a against column_b on a per-run metric (a column of reports.tables.per_run)."""

    claim: str
    role: str
    """`primary` (pre-registered, votes) or `context` (shown, no verdict)."""
    column_a: str
    column_b: str
    metric: str
    label: str
    kind: str
    """`ratio`, `diff` or `poi` (P(A > B) + ½·P(A = B), rank-based)."""
    direction: int
    """+1 if the claim predicts effect > no effect, −1 if <."""
    factor: tuple[str, ...] = ()
    """AlgoConfig fields the two columns must differ in, and only in (primary tests)."""
    statistic: str = "IQM"
    """Per-side statistic of a ratio or diff: IQM, mean, median or std."""
    envs: str = "all"
    """`all` or `textgen` (only TextGen has gold reward)."""
    metric_b: str = ""
    """If set, side B's values are this metric of column_a's runs, measured on column_b's runs (e.g. the gold
    of column_b's run of the same seed at column_a's final KL: `early_stop_gold`); else `metric` of column_b."""

    @property
    def effect_kind(self) -> str:
        return {"poi": "P(A > B)", "ratio": f"ratio of {self.statistic}s", "diff": f"difference of {self.statistic}s"}[
            self.kind
        ]

    @property
    def name(self) -> str:
        """Unique within TESTS: label, effect and the two columns."""
        return f"{self.label}, {self.effect_kind}: {self.column_a} vs {self.column_b}"


def _c5_tests(g: int) -> tuple[Test, ...]:
    grpo, control = f"grpo-g{g}", f"grpo_critic-g{g}"
    return (
        Test("C5", PRIMARY, grpo, control, "flops_per_env_step", "FLOPs per env step", "ratio", -1, ("advantage",)),
        Test("C5", PRIMARY, grpo, control, "update_memory_bytes", "update memory", "ratio", -1, ("advantage",)),
        Test("C5", CONTEXT, grpo, control, "peak_rss_mb", "peak resident memory", "ratio", -1),
        Test("C5", CONTEXT, grpo, control, "wall_time_s", "wall time", "ratio", -1),
        Test("C5", CONTEXT, grpo, control, "auc", "return per env step (AUC)", "diff", +1),
    )


NOISE = ("grad_noise_scale", "gradient noise scale")
EARLY_STOP = ("gold", "gold reward vs the β = 0 run stopped at the same KL")
EARLY_STOP_B = "early_stop_gold"
G_LOW, G_HIGH = CONTROL_GROUP_SIZES

TESTS: tuple[Test, ...] = (
    Test("C1", PRIMARY, "pg", "pg_centred", *NOISE, "poi", +1, ("advantage",)),
    Test("C1", CONTEXT, "pg", "pg_centred", *NOISE, "ratio", +1, statistic="median"),
    Test("C1", CONTEXT, "pg", "pg_centred", "grad_cosine", "gradient cosine", "diff", -1),
    Test("C1", CONTEXT, "pg", "pg_centred", "final_return", "final return", "diff", -1),
    Test("C2", PRIMARY, "critic", "pg", *NOISE, "poi", -1, ("advantage", "value_epochs")),
    Test("C2", CONTEXT, "critic", "pg", *NOISE, "ratio", -1, statistic="median"),
    Test("C2", CONTEXT, "critic", "pg_centred", *NOISE, "poi", -1),
    Test("C2", CONTEXT, "critic", "pg", "final_return", "final return", "diff", +1),
    Test("C2", CONTEXT, "critic", "pg", "auc", "area under the return curve", "diff", +1),
    Test("C3", PRIMARY, "ppo", "ppo_noclip", "approx_kl", "approx KL per update", "ratio", -1, ("clip",)),
    Test("C3", PRIMARY, "ppo", "ppo_noclip", "drawdown", "max drawdown (score range)", "diff", -1, ("clip",), "mean"),
    Test("C3", CONTEXT, "ppo", "ppo_noclip", "collapsed", "collapse rate", "diff", -1, statistic="mean"),
    Test("C3", CONTEXT, "ppo", "ppo_noclip", "diverged", "divergence rate", "diff", -1, statistic="mean"),
    Test("C3", CONTEXT, "ppo", "ppo_noclip", "final_return", "across-seed std of final return", "ratio", -1, (), "std"),
    Test("C3", CONTEXT, "ppo", "ppo_noclip", "final_return", "final return", "diff", +1),
    Test("C3", CONTEXT, "ppo", "critic", "approx_kl", "approx KL per update", "ratio", -1),
    Test("C4", PRIMARY, "ppo_kl", "ppo", *EARLY_STOP, "diff", +1, ("kl_coef",), envs="textgen", metric_b=EARLY_STOP_B),
    Test("C4", CONTEXT, "ppo_kl", "ppo", "gap", "proxy − gold gap", "diff", -1, envs="textgen"),
    Test("C4", CONTEXT, "ppo_kl", "ppo", "kl_to_ref", "KL to reference", "ratio", -1, envs="textgen"),
    *_c5_tests(G_LOW),
    *_c5_tests(G_HIGH),
    Test("C5", PRIMARY, f"grpo-g{G_HIGH}", f"grpo-g{G_LOW}", *NOISE, "poi", -1, ("group_size",)),
    Test(
        "C5", CONTEXT, f"grpo-g{G_HIGH}", f"grpo-g{G_LOW}", "env_steps_per_update", "env steps per update", "ratio", +1
    ),
)
"""The pre-registered tests. The direction states the claim: e.g. C1 predicts P(noise of pg > noise of
pg_centred) > ½. C2's factor is the learned baseline: the `baseline` advantage and the critic's fit
(`value_epochs`); C5's noise test is the G trend (one doubling of G)."""


def early_stop_tests(configs: dict[tuple[str, str], dict], tests: tuple[Test, ...] = TESTS) -> tuple[Test, ...]:
    """C4's primary test for every TextGen column with a KL penalty whose β = 0 sibling ran (reports.data.
    kl_siblings), unless `tests` already has it: its final gold vs the sibling's gold at the same KL."""
    have = {(t.column_a, t.column_b) for t in tests if t.metric_b == EARLY_STOP_B}
    pairs = sorted({(a, b) for (env, a), b in kl_siblings(configs).items() if is_textgen(env)} - have)
    return tuple(
        Test("C4", PRIMARY, a, b, *EARLY_STOP, "diff", +1, ("kl_coef",), envs="textgen", metric_b=EARLY_STOP_B)
        for a, b in pairs
    )


def claim_columns(claim_id: str | None = None) -> list[str]:
    """Matrix columns the primary tests of one claim (or of all claims) compare, in table order."""
    tests = [t for t in TESTS if t.role == PRIMARY and claim_id in (None, t.claim)]
    return list(dict.fromkeys(c for t in tests for c in (t.column_a, t.column_b)))


def serves(preset: str) -> list[str]:
    """Claims whose primary tests use a column of this preset (`grpo` serves through `grpo-gG`)."""
    return [c.id for c in CLAIMS if preset in {col.rsplit("-g", 1)[0] for col in claim_columns(c.id)}]


ROW_COLUMNS = [
    "claim",
    "test",
    "role",
    "env",
    "column_a",
    "column_b",
    "differs_in",
    "factor",
    "metric",
    "effect_kind",
    "effect",
    "ci_low",
    "ci_high",
    "no_effect",
    "claimed",
    "p_value",
    "p_holm",
    "n_a",
    "n_b",
    "n_inf_a",
    "n_inf_b",
    "verdict",
    "envs_support",
    "envs_contradict",
    "envs_inconclusive",
    "note",
]


def differs_in(a: dict | None, b: dict | None) -> str:
    """AlgoConfig fields (other than the name) whose values differ between two resolved configs, sorted and
    comma-separated; '' when a config is missing."""
    if not a or not b:
        return ""
    return ", ".join(sorted(k for k in set(a) | set(b) if k != "name" and a.get(k) != b.get(k)))


def _values(runs: pd.DataFrame, env: str, column: str, metric: str, keep_inf: bool) -> np.ndarray:
    if metric not in runs:
        return np.array([])
    v = runs[(runs.env == env) & (runs.algo == column)][metric].to_numpy(dtype=float)
    return v[~np.isnan(v)] if keep_inf else v[np.isfinite(v)]


def _base(t: Test) -> dict:
    """The columns every row of a test shares."""
    null = S.EFFECT_NULL[t.kind]
    return {
        "claim": t.claim,
        "test": t.name,
        "role": t.role,
        "column_a": t.column_a,
        "column_b": t.column_b,
        "factor": ", ".join(t.factor),
        "metric": t.metric,
        "effect_kind": t.effect_kind,
        "no_effect": null,
        "claimed": (">" if t.direction > 0 else "<") + f" {null:g}",
    }


def _note(t: Test, runs: pd.DataFrame) -> tuple[bool, str]:
    """(whether either column has a value of the metric, the runs' `<metric>_note`s or why it is unmeasured)."""
    mine = runs[runs.algo.isin([t.column_a, t.column_b])] if "algo" in runs else runs
    if t.metric not in mine or not mine[t.metric].notna().any():
        return False, f"not measured: no {t.metric} in the runs of either column"
    notes = mine[f"{t.metric}_note"].dropna() if f"{t.metric}_note" in mine else []
    return True, "; ".join(sorted({str(n) for n in notes if n}))


def _least(t: Test) -> int:
    """Runs a side needs for a point estimate: 2 for a std, else 1."""
    return 2 if t.statistic == "std" else 1


def _env_row(t: Test, a: np.ndarray, b: np.ndarray, dist: np.ndarray) -> dict:
    """Effect, interval, p-value and run counts of one env (dist: its bootstrap distribution, or empty)."""
    low, high = S.percentile_interval(dist)
    return {
        "effect": float(S.effect(a, b, t.kind, t.statistic)) if min(a.size, b.size) >= _least(t) else np.nan,
        "ci_low": low,
        "ci_high": high,
        "p_value": S.bootstrap_p(dist, S.EFFECT_NULL[t.kind]),
        "n_a": a.size,
        "n_b": b.size,
        "n_inf_a": int(np.isinf(a).sum()),
        "n_inf_b": int(np.isinf(b).sum()),
    }


def _combined_row(t: Test, env_rows: list[dict], pooled: list[int], dists: list[np.ndarray]) -> dict:
    """The pooled effect over the envs with a bootstrap distribution (indices `pooled` into env_rows)."""
    combined = S.pool(np.stack(dists, axis=-1), t.kind) if dists else np.array([])
    low, high = S.percentile_interval(combined)
    points = np.array([env_rows[i]["effect"] for i in pooled])
    return {
        "env": COMBINED,
        "differs_in": ", ".join(dict.fromkeys(r["differs_in"] for r in env_rows if r["differs_in"])),
        "effect": float(S.pool(points, t.kind)) if points.size else np.nan,
        "ci_low": low,
        "ci_high": high,
        "p_value": S.bootstrap_p(combined, S.EFFECT_NULL[t.kind]),
        **{k: sum(r[k] for r in env_rows) for k in ("n_a", "n_b", "n_inf_a", "n_inf_b")},
    }


def _test_rows(t: Test, runs: pd.DataFrame, configs: dict, envs: list[str], seed: int, reps: int) -> list[dict]:
    """Per-env rows and the combined row of one test (effects, intervals, p-values; verdicts come later).
    An env enters the pooled effect when each side has 2 finite runs (3 for a std)."""
    keep_inf = t.kind == "poi" or t.statistic == "median"
    need = 3 if t.statistic == "std" else 2
    measured, note = _note(t, runs)
    base = _base(t) | {"_measured": measured}
    rows, pooled, dists = [], [], []
    for env in envs:
        a = _values(runs, env, t.column_a, t.metric, keep_inf)
        b = _values(runs, env, *((t.column_a, t.metric_b) if t.metric_b else (t.column_b, t.metric)), keep_inf)
        dist = np.array([])
        if min(a.size, b.size) >= need:
            dist = S.env_bootstrap([(a, b)], t.kind, t.statistic, reps, bootstrap_seed(seed, t.name, env))[:, 0]
            pooled.append(len(rows))
            dists.append(dist)
        cfgs = configs.get((env, t.column_a)), configs.get((env, t.column_b))
        rows.append(base | {"env": env, "differs_in": differs_in(*cfgs), "note": note} | _env_row(t, a, b, dist))
    combined_note = note or ("" if pooled else f"no env has {need} finished runs per side")
    return rows + [base | {"note": combined_note} | _combined_row(t, rows, pooled, dists)]


def bootstrap_seed(seed: int, test: str, env: str) -> list[int]:
    """The bootstrap stream of one test in one env: the report's seed and CRC-32 hashes of the test's name and the
    env id, so adding a test or an env never moves another's draws."""
    return [seed, zlib.crc32(test.encode()), zlib.crc32(env.encode())]


def interval_verdict(low: float, high: float, null: float, direction: int) -> str:
    """supported / contradicted / inconclusive: the interval excludes `null` on the claimed side / the other."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if (direction > 0 and low > null) or (direction < 0 and high < null):
        return SUPPORTED
    if (direction > 0 and high < null) or (direction < 0 and low > null):
        return CONTRADICTED
    return INCONCLUSIVE


def env_verdict(row: dict, direction: int) -> str:
    """A primary test in one env: SMALL_N under MIN_RUNS runs a side, else its 95% interval's verdict."""
    if min(row["n_a"], row["n_b"]) < MIN_RUNS:
        return SMALL_N
    return interval_verdict(row["ci_low"], row["ci_high"], row["no_effect"], direction)


def combined_verdict(env_rows: list[dict], p_holm: float, effect: float, null: float, direction: int) -> str:
    """A primary test over envs: SMALL_N if any env has fewer than MIN_RUNS runs a side; supported
    (contradicted) if the Holm-adjusted p < ALPHA, the pooled effect lies on the claimed (other) side, and no
    env's estimate lies on the opposite side; otherwise inconclusive. So envs of opposite sign never support."""
    if not env_rows:
        return INCONCLUSIVE
    if any(min(r["n_a"], r["n_b"]) < MIN_RUNS for r in env_rows):
        return SMALL_N
    if not (np.isfinite(p_holm) and p_holm < ALPHA and np.isfinite(effect)):
        return INCONCLUSIVE
    side = np.sign(effect - null)
    if any(np.sign(r["effect"] - null) == -side for r in env_rows):
        return INCONCLUSIVE
    return SUPPORTED if side == np.sign(direction) else CONTRADICTED


def _decide(rows: list[dict], tests: dict[str, Test]) -> list[dict]:
    """Holm across the primary tests' combined p-values, then every primary row's verdict; context rows get ''."""
    combined = [r for r in rows if r["role"] == PRIMARY and r["env"] == COMBINED]
    for r, p in zip(combined, S.holm([r["p_value"] for r in combined])):
        r["p_holm"] = p
    for r in rows:
        r.setdefault("p_holm", np.nan)
        r.update(verdict="", envs_support="", envs_contradict="", envs_inconclusive="")
        if r["role"] != PRIMARY:
            continue
        if r["env"] != COMBINED:
            r["verdict"] = env_verdict(r, tests[r["test"]].direction) if r["_measured"] else INCONCLUSIVE
    for r in combined:
        env_rows = [e for e in rows if e["test"] == r["test"] and e["env"] != COMBINED]
        direction = tests[r["test"]].direction
        r["verdict"] = (
            combined_verdict(env_rows, r["p_holm"], r["effect"], r["no_effect"], direction)
            if r["_measured"]
            else INCONCLUSIVE
        )
        for key, verdict in (("envs_support", SUPPORTED), ("envs_contradict", CONTRADICTED)):
            r[key] = ", ".join(e["env"] for e in env_rows if e["verdict"] == verdict)
        r["envs_inconclusive"] = ", ".join(e["env"] for e in env_rows if e["verdict"] in (INCONCLUSIVE, SMALL_N))
    return rows


def evaluate(
    runs: pd.DataFrame,
    configs: dict[tuple[str, str], dict],
    seed: int = 0,
    reps: int = REPS,
    tests: tuple[Test, ...] | None = None,
) -> pd.DataFrame:
    """All tests on per-run measurements (reports.tables.per_run) → one row per (test, env) and per test
    'combined', columns ROW_COLUMNS. configs: (env, column) → resolved AlgoConfig as a dict. Pure and seeded.
    tests: by default TESTS plus C4's early-stopping test of every β column of the sweep (early_stop_tests),
    which then replace TESTS' own early-stopping test when that one's columns did not run. Columns another
    library trains (`sb3_ppo`, `sb3_a2c`: AlgoConfig.trainer) are left out of every test: they are references,
    not a claim's evidence."""
    others = {column for (_, column), cfg in configs.items() if cfg.get("trainer", "rlbench") != "rlbench"}
    configs = {key: cfg for key, cfg in configs.items() if key[1] not in others}
    runs = runs[~runs["algo"].isin(others)] if "algo" in runs else runs
    if tests is None:
        extra = early_stop_tests(configs)
        ran = {column for _, column in configs}
        kept = [t for t in TESTS if not (extra and t.metric_b == EARLY_STOP_B and t.column_a not in ran)]
        after = max(i for i, t in enumerate(kept) if t.claim <= "C4") + 1  # C4's rows stay together
        tests = (*kept[:after], *extra, *kept[after:])
    if len({t.name for t in tests}) < len(tests):
        raise ValueError("two tests share a name (label, effect and columns); rows are keyed by it")
    all_envs = sorted(runs.env.unique()) if len(runs) else []
    rows = []
    for t in tests:
        envs = [e for e in all_envs if t.envs == "all" or is_textgen(e)]
        rows += _test_rows(t, runs, configs, envs, seed, reps)
    rows = _decide(rows, {t.name: t for t in tests})
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def claim_verdicts(table: pd.DataFrame) -> dict[str, str]:
    """Claim → verdict from its primary tests' combined rows: contradicted if any is, supported if all are,
    SMALL_N if any lacks runs, else inconclusive (no primary test: inconclusive)."""
    out = {}
    for c in CLAIMS:
        v = list(table[(table.claim == c.id) & (table.role == PRIMARY) & (table.env == COMBINED)].verdict)
        if CONTRADICTED in v:
            out[c.id] = CONTRADICTED
        elif v and all(x == SUPPORTED for x in v):
            out[c.id] = SUPPORTED
        else:
            out[c.id] = SMALL_N if SMALL_N in v else INCONCLUSIVE
    return out
