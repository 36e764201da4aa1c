"""What `rlbench run` prints: live progress (Rich on a terminal, one plain line per run otherwise) and the
end-of-run summary. The state and the ETA come from rlbench.progress; this module only formats and draws."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rlbench import store
from rlbench.algos import order_key
from rlbench.progress import Finished, RunEnd, SweepProgress, Work, column_family
from rlbench.spec import DONE, RunSpec, Status
from rlbench.store import Outcome


def duration(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def decimals(value: float, digits: int = 3) -> int:
    """Decimals that show `digits` significant digits of value, between 1 and 3 (142.5 → 1, 0.873 → 3)."""
    if not math.isfinite(value) or value == 0:
        return 3
    return min(3, max(1, digits - 1 - math.floor(math.log10(abs(value)))))


def number(value: float, places: int | None = None) -> str:
    """value with `places` decimals (default: `decimals(value)`); NaN as an en dash."""
    if not math.isfinite(value):
        return "–"
    return f"{value:.{decimals(value) if places is None else places}f}"


class SweepDisplay:
    """Receives the executor's start/finish events, updates a SweepProgress and shows it: a live panel on
    a terminal, one plain line per finished run otherwise."""

    def __init__(self, cells: list[RunSpec], out: Path, workers: int, seed_batch: int, console: Console) -> None:
        self.console = console
        self.out = out
        keys = [str(c.run_dir(out)) for c in cells]
        self.state = SweepProgress(
            {k: Work(c.env_id, column_family(c.algo.name), c.steps, c.cell) for k, c in zip(keys, cells)},
            workers,
            seed_batch,
        )
        self.labels = {k: f"{c.env_id} {c.algo.name} seed {c.seed}" for k, c in zip(keys, cells)}
        self.began = time.monotonic()
        self.recent: list[Finished] = []
        self.live: Live | None = None

    def __enter__(self) -> SweepDisplay:
        if self.console.is_terminal:
            self.live = Live(self, console=self.console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
        skipped = len(self.state.skipped)
        if skipped:
            self.console.print(f"{skipped} run(s) already finished in {self.out} were skipped", highlight=False)

    def on_start(self, batch: list[RunSpec]) -> None:
        self.state.start([str(cell.run_dir(self.out)) for cell in batch], time.monotonic())

    def on_done(self, outcome: Outcome) -> None:
        key = str(outcome.run_dir)
        if outcome.status == Status.SKIPPED:
            self.state.skip(key)
            return
        done = self.state.finish(key, time.monotonic(), run_end(outcome))
        self.recent = ([done] + self.recent)[:3]
        if outcome.status not in DONE:
            self.console.print(
                f"[yellow]{outcome.status}[/] {escape(f'{outcome.run_dir}: {outcome.reason}')}", highlight=False
            )
        if self.live is None:
            self.console.print(self.plain_line(done), markup=False, highlight=False, soft_wrap=True)

    def eta_text(self, note: str = "") -> str:
        """`ETA h:mm:ss` and the note, or what the ETA waits for before any run has finished."""
        eta = self.state.eta(time.monotonic())
        return "ETA after the first run" if eta is None else f"ETA {duration(eta)}{note}"

    def finished_text(self, done: Finished) -> str:
        result = f"final return {number(done.final_return)}" if done.status in DONE else "no result"
        return f"{done.status} {self.labels[done.key]}: {result}, {done.seconds:.1f} s"

    def plain_line(self, done: Finished) -> str:
        """The log line of one finished run: count, status, env, column, seed, final return, elapsed, ETA."""
        count = f"[{self.state.done_count()}/{self.state.total()}]"
        return f"{count} {self.finished_text(done)} ({self.eta_text()})"

    def __rich__(self) -> Group:
        now = time.monotonic()
        bars = Table.grid(padding=(0, 2))
        for env in self.state.envs():
            total, done = self.state.total(env), self.state.done_count(env)
            bars.add_row(escape(env), ProgressBar(total=total, completed=done, width=30), f"{done}/{total}")
        total, done = self.state.total(), self.state.done_count()
        bars.add_row(
            "[bold]all[/]",
            ProgressBar(total=total, completed=done, width=30),
            f"{done}/{total}  elapsed {duration(now - self.began)}  {self.eta_text(' (cost-weighted)')}",
        )
        running = [f"{escape(self.labels[k])} ({duration(now - t)})" for k, t in self.state.started.items()]
        lines = [bars, Text.from_markup("[bold]running[/]  " + (" · ".join(running) or "–"))]
        lines += [Text("finished " + self.finished_text(d)) for d in self.recent]
        return Group(*lines)


def run_end(outcome: Outcome) -> RunEnd:
    """The run's status, final evaluation return and training time from its summary.json (NaN without one)."""
    if outcome.status not in DONE:
        return RunEnd(outcome.status)
    summary = outcome.record().summary
    return RunEnd(outcome.status, _summary_float(summary["final_return"]), _summary_float(summary["wall_time_s"]))


def _summary_float(value: float | None) -> float:
    """A summary.json number; null, the store's spelling of NaN/inf (e.g. an env_nan run's final return), as NaN."""
    return math.nan if value is None else float(value)


# ----------------------------------------------------------------------------------------------------------
# End-of-run summary

TEXT_METRICS = {"gold": "eval/gold_mean", "proxy": "eval/proxy_mean", "gap": "eval/gap"}
"""Columns of the summary for envs whose evaluations log gold and proxy reward (TextGen)."""


def final_evals(records: list[store.RunRecord]) -> pd.DataFrame:
    """TEXT_METRICS' columns of each run's last evaluation, a row per record (NaN where not logged)."""
    last = [evals.iloc[-1].to_dict() if len(evals) else {} for evals in (r.evals() for r in records)]
    return pd.DataFrame(last).reindex(index=range(len(records)), columns=list(TEXT_METRICS.values()))


def mean_std(values: pd.Series, places: int | None = None) -> str:
    """`mean ± std` over seeds, both with `places` decimals (default: the mean's 3 significant digits)."""
    mean = values.mean()
    places = decimals(mean) if places is None else places
    return f"{number(mean, places)} ± {number(values.std(ddof=0), places)}"


def env_table(env: str, rows: pd.DataFrame) -> Table:
    """One env's summary: per column, the metric that matters (gold/proxy/gap on TextGen, else final
    return) as mean ± std over seeds, then wall time and throughput."""
    textual = rows[TEXT_METRICS["gold"]].notna().any()
    metrics = dict(TEXT_METRICS) if textual else {"final return": "final_return"}
    places = 3 if textual else None
    table = Table(title=f"{escape(env)} (mean ± std over seeds)")
    table.add_column("algo", no_wrap=True)
    for col in ("n", *metrics):
        table.add_column(col, justify="right", no_wrap=True)
    for col in ("wall time (s)", "env steps/s", "grad cosine", "grad noise scale"):
        table.add_column(col, justify="right")
    for algo, g in sorted(rows.groupby("algo", sort=False), key=lambda item: order_key(item[0])):
        table.add_row(
            escape(algo),
            str(len(g)),
            *(mean_std(g[column], places) for column in metrics.values()),
            f"{g.wall_time_s.mean():.1f}",
            f"{g.env_steps_per_s.mean():,.0f}",
            f"{g.grad_cosine_mean.mean():.3f}",
            f"{g.grad_noise_scale.median():,.0f}",
        )
    return table


def print_results(console: Console, out: Path) -> None:
    """Per env, a table of every column's final result across its seeds (TextGen: gold, proxy and gap)."""
    records = [r for r in store.read_sweep(out)[0] if r.status in DONE]
    if not records:
        return
    done = store.summary_rows(records).join(final_evals(records))
    for env, rows in done.groupby("env", sort=False):
        console.print(env_table(str(env), rows))


def claim_verdicts(claims_csv: Path) -> dict[str, str]:
    """Claim → verdict from a rendered report's tables/claims.csv: its primary (non-context) rows, combined
    across envs where the table has per-env rows; contradicted if any is, supported if all are, otherwise
    the first other verdict (e.g. inconclusive)."""
    table = pd.read_csv(claims_csv, dtype=str, keep_default_na=False)
    if "role" in table:
        table = table[table.role != "context"]
    if "env" in table:
        table = table[table.env == "combined"]
    verdicts = {}
    for claim, rows in table.groupby("claim", sort=False):
        found = list(rows.verdict)
        if "contradicted" in found:
            verdicts[str(claim)] = "contradicted"
        elif found and all(v == "supported" for v in found):
            verdicts[str(claim)] = "supported"
        else:
            verdicts[str(claim)] = next((v for v in found if v != "supported"), "inconclusive")
    return verdicts


VERDICT_STYLE = {"supported": "green", "contradicted": "red"}


def print_verdicts(console: Console, report_dir: Path) -> None:
    """The claims at a glance, one line per claim, from the rendered report (nothing if it has no claims table)."""
    path = report_dir / "tables" / "claims.csv"
    if not path.is_file():
        return
    verdicts = claim_verdicts(path)
    console.print(f"[bold]claims[/] at a glance (from {escape(str(path))}):", highlight=False)
    for claim, verdict in verdicts.items():
        style = VERDICT_STYLE.get(verdict, "yellow")
        console.print(f"  {escape(claim)}  [{style}]{escape(verdict)}[/]", highlight=False)


def print_closing(console: Console, seconds: float, runs: int, report_dir: Path | None) -> None:
    """The last line: total wall time of the command and where the report is."""
    where = f"report: [bold]{escape(str(report_dir / 'report.html'))}[/]" if report_dir else "no report (--no-report)"
    console.print(f"total wall time {duration(seconds)} for {runs} run(s); {where}", highlight=False)
