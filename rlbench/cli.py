"""`rlbench` command line: run a matrix of algorithms × envs × seeds, list what exists."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rlbench import api, display, store
from rlbench import tensorboard as tb
from rlbench.algos import DESCRIPTIONS, NATIVE, PRESETS, AlgoConfig
from rlbench.executor import DEFAULT_SEED_BATCH, check_contract_isolated
from rlbench.matrix import (
    BUDGET_PRESETS,
    BUILTIN_ENVS,
    DEFAULT_ALGOS,
    DEFAULT_ENVS,
    MatrixError,
    check_env_id,
    parse_floats,
    parse_ints,
    parse_list,
    resolve_algos,
)
from rlbench.spec import RunSpec, Status

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
if not console.is_terminal:
    console = Console(width=max(console.width, 120))
errors = Console(stderr=True)
if not errors.is_terminal:
    errors = Console(stderr=True, width=max(errors.width, 200))


def fail(message: str) -> typer.Exit:
    """Print a clear error and return the exit (code 2) for the caller to raise."""
    errors.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    return typer.Exit(2)


@app.command()
def run(
    algos: Annotated[
        Optional[str], typer.Option(help="Comma-separated algorithm names, or 'all' (+ controls) [default: all].")
    ] = None,
    envs: Annotated[
        Optional[str], typer.Option(help="Comma-separated env ids, 'classic' or 'all' [default: the preset's].")
    ] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Number of seeds (0..N-1) [default: the preset's].")] = None,
    seed_list: Annotated[Optional[str], typer.Option(help="Explicit comma-separated seeds, e.g. 3,7,11.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Budget preset: smoke, quick or full [default: quick].")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Env-step budget per run, overriding the preset.")] = None,
    group_sizes: Annotated[
        Optional[str], typer.Option(help="GRPO group sizes G, one matrix column per G [default: 2,4,8,16].")
    ] = None,
    kl_coefs: Annotated[
        Optional[str],
        typer.Option(help="KL coefficients β, one matrix column per β for every algorithm with a KL term."),
    ] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a setting: [ALGO.]FIELD=VALUE (repeatable).")] = [],
    matrix: Annotated[
        Optional[Path], typer.Option(help="TOML matrix file; flags given on the command line override it.")
    ] = None,
    env_module: Annotated[
        list[str], typer.Option("--env-module", help="Import this module first; it registers its envs (repeatable).")
    ] = [],
    env_kwargs: Annotated[
        Optional[str], typer.Option(help="JSON keyword arguments for the envs, e.g. '{\"size\": 8}'.")
    ] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes in parallel (local executor).")] = os.cpu_count() or 1,
    executor: Annotated[
        str, typer.Option(help="local (a process per run) or ray (pip install 'rlbench[ray]').")
    ] = "local",
    ray_address: Annotated[
        Optional[str], typer.Option(help="Ray cluster to join, e.g. auto or ray://host:10001.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Sweep directory [default: runs/<preset>-<matrix hash>].")] = None,
    time_limit: Annotated[Optional[float], typer.Option(help="Per-run wall-clock limit in seconds.")] = None,
    seed_batch: Annotated[
        int, typer.Option(help="Seeds of one cell a worker trains together (1: a process per run).")
    ] = DEFAULT_SEED_BATCH,
    force_new: Annotated[
        bool, typer.Option(help="Discard runs in --out that were made with a different config.")
    ] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not render the report at the end.")] = False,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Write each run's metrics as TensorBoard events in its directory.")
    ] = False,
) -> None:
    """Run a matrix of algorithms × envs × seeds; finished runs in the sweep directory are skipped (resume)."""
    try:
        if tensorboard:
            tb.require()
        if seeds is not None and seed_list is not None:
            raise MatrixError("give either --seeds or --seed-list, not both")
        planned = api.plan(
            algos=parse_list(algos, "--algos") if algos is not None else None,
            envs=parse_list(envs, "--envs") if envs is not None else None,
            seeds=parse_ints(seed_list, "--seed-list") if seed_list is not None else seeds,
            preset=preset,
            out=out,
            sets=set_,
            jobs=jobs,
            executor=executor,
            group_sizes=parse_ints(group_sizes, "--group-sizes") if group_sizes is not None else None,
            kl_coefs=parse_floats(kl_coefs, "--kl-coefs") if kl_coefs is not None else None,
            steps=steps,
            matrix=matrix,
            env_modules=env_module,
            env_kwargs=parse_env_kwargs(env_kwargs),
            ray_address=ray_address,
            time_limit=time_limit,
            seed_batch=seed_batch,
        )
        count = len({c.env_id for c in planned.cells})
        console.print(f"checking {count} env(s) against rlbench's contract …", highlight=False)
        api.check_contract(planned.cells)
    except (MatrixError, tb.TensorBoardMissing) as err:
        raise fail(str(err)) from None
    began = time.monotonic()
    out = planned.out

    def watch(order: list[RunSpec]) -> display.SweepDisplay:
        kind = type(planned.runner.backend).__name__
        console.print(f"rlbench: {len(order)} runs → [bold]{escape(str(out))}[/] ({kind})")
        return display.SweepDisplay(order, out, planned.jobs, planned.runner.seed_batch, console)

    try:
        with sigterm_as_interrupt():
            outcomes = api.execute(planned, force_new, watch)
    except store.SweepError as err:
        raise fail(str(err)) from None
    if tensorboard:
        written = api.write_tensorboard(planned.cells, out)
        console.print(
            f"TensorBoard events for {written} run(s): tensorboard --logdir {escape(str(out))}", highlight=False
        )
    display.print_results(console, out)
    counts: dict[Status, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    print_counts(counts)
    report_dir = None if no_report else write_report(out)
    if report_dir is not None:
        display.print_verdicts(console, report_dir)
    display.print_closing(console, time.monotonic() - began, len(outcomes), report_dir)
    failed = [o for o in outcomes if o.status == Status.FAILED]
    if failed:
        errors.print(f"{len(failed)} run(s) failed:")
        for o in failed:
            errors.print(f"  {o.run_dir}: {o.reason}", highlight=False, markup=False)
        raise typer.Exit(1)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a job scheduler) stops a sweep as Ctrl-C does: a KeyboardInterrupt, on whose way out the
    executor cancels the running seed batches (their workers end with it); finished runs stay for a resume."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_env_kwargs(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise MatrixError(f"--env-kwargs {text!r} is not valid JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise MatrixError(f"--env-kwargs must be a JSON object like '{{\"size\": 8}}', got {text!r}")
    return value


def print_counts(counts: dict[Status, int]) -> None:
    shown = (Status.OK, Status.DIVERGED, Status.ENV_NAN, Status.FAILED, Status.SKIPPED)
    table = Table(title="runs")
    for status in shown:
        table.add_column(status.value, justify="right")
    table.add_row(*(str(counts.get(s, 0)) for s in shown))
    console.print(table)


def write_report(out: Path) -> Path:
    """Render the sweep's report; returns its directory (DIR/report)."""
    from rlbench.reports.render import ReportError

    try:
        return api.SweepResults(out).report()
    except ReportError as err:
        raise fail(str(err)) from None


@app.command()
def report(out: Annotated[Path, typer.Argument(help="A sweep directory written by `rlbench run`.")]) -> None:
    """Render DIR/report/: report.md, a self-contained report.html, figures/ and tables/."""
    path = write_report(out)
    console.print(f"report: [bold]{escape(str(path / 'report.html'))}[/] (and report.md, figures/, tables/)")


bench_app = typer.Typer(help="Throughput benchmarks, measured side by side in one process.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("textgen")
def bench_textgen(
    algos: Annotated[str, typer.Option(help="Comma-separated algorithms to measure side by side.")] = "ppo,grpo",
    repeats: Annotated[int, typer.Option(help="Updates measured per algorithm (medians are shown).")] = 10,
) -> None:
    """Tokens/s of TextGen generation and of one training update, per algorithm (one torch thread)."""
    from rlbench.textgen_bench import benchmark, sft_message

    try:
        names = resolve_algos(parse_list(algos, "--algos"))
        others = [n for n in names if n not in NATIVE]
        if others:
            raise MatrixError(f"{', '.join(others)}: not trained by rlbench's loop; allowed: {', '.join(NATIVE)}")
        if repeats <= 0:
            raise MatrixError(f"--repeats must be > 0, got {repeats}")
    except MatrixError as err:
        raise fail(str(err)) from None
    rows = [benchmark(name, repeats=repeats) for name in names]
    table = Table(title=f"TextGen throughput on this machine (median of {repeats} updates, 1 thread)")
    columns = ("algo", "sequences/update", "tokens/update", "generate tok/s", "update tok/s", "update ÷ generate time")
    for col in columns:
        table.add_column(col, justify="right" if col != "algo" else "left")
    for row in rows:
        table.add_row(
            row["algo"],
            str(row["sequences_per_update"]),
            f"{row['tokens_per_update']:.0f}",
            f"{row['collect_tokens_per_s']:,.0f}",
            f"{row['update_tokens_per_s']:,.0f}",
            f"{row['update_s'] / row['collect_s']:.1f}×",
        )
    console.print(table)
    console.print(sft_message(rows[0]), highlight=False)


@bench_app.command("envs")
def bench_envs(
    envs: Annotated[str, typer.Option(help="Comma-separated ids with a batched implementation.")] = "",
    num_envs: Annotated[str, typer.Option(help="Comma-separated sub-env counts.")] = "8,64",
) -> None:
    """Env steps/s of rlbench's batched Acrobot, MountainCar and Pendulum vs Gymnasium's SyncVectorEnv."""
    from rlbench.classic_vector_bench import compare
    from rlbench.envs.classic_vector import VECTOR_ENTRY_POINTS

    try:
        ids = parse_list(envs, "--envs") if envs else list(VECTOR_ENTRY_POINTS)
        unknown = [i for i in ids if i not in VECTOR_ENTRY_POINTS]
        if unknown:
            raise MatrixError(
                f"--envs {', '.join(unknown)}: no batched implementation; allowed: {', '.join(VECTOR_ENTRY_POINTS)}"
            )
        counts = parse_ints(num_envs, "--num-envs")
        if min(counts) <= 0:
            raise MatrixError(f"--num-envs must be > 0, got {num_envs}")
    except MatrixError as err:
        raise fail(str(err)) from None
    table = Table(title="Batched vs Gymnasium SyncVectorEnv, random actions, this machine (best of 3, interleaved)")
    for col in ("env", "sub-envs", "batched steps/s", "sync steps/s", "batched ÷ sync"):
        table.add_column(col, justify="right" if col != "env" else "left")
    for env_id in ids:
        for row in compare(env_id, tuple(counts)):
            table.add_row(
                env_id,
                str(row["num_envs"]),
                f"{row['batched_steps_per_s']:,.0f}",
                f"{row['sync_steps_per_s']:,.0f}",
                f"{row['ratio']:.1f}×",
            )
    console.print(table)


@bench_app.command("sb3")
def bench_sb3(
    env: Annotated[str, typer.Option(help="Gymnasium id to train on.")] = "CartPole-v1",
    steps: Annotated[int, typer.Option(help="Env-step budget per run.")] = 100_000,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
) -> None:
    """rlbench's ppo vs Stable-Baselines3's PPO with the same hyperparameters: env steps/s and final return."""
    from rlbench.compare_sb3 import compare, summarize

    try:
        check_env_id(env)
        seed_values = parse_ints(seeds, "--seeds")
        if steps <= 0:
            raise MatrixError(f"--steps must be > 0, got {steps}")
        runs = compare(env, steps, seed_values)
    except (MatrixError, ValueError) as err:
        raise fail(str(err)) from None
    table = Table(title=f"{escape(env)}: ppo, {steps:,} env steps per run, 1 thread (mean over seeds {seeds})")
    for col in ("implementation", "env steps/s", "speed vs SB3", "final return", "wall time (s)"):
        table.add_column(col, justify="right" if col != "implementation" else "left")
    for row in summarize(runs).reset_index().itertuples():
        table.add_row(
            row.impl,
            f"{row.env_steps_per_s:,.0f}",
            f"{row.speed_vs_sb3:.2f}×",
            f"{row.final_return:.1f} ± {row.final_return_std:.1f}",
            f"{row.wall_time_s:.1f}",
        )
    console.print(table)


@bench_app.command("throughput")
def bench_throughput(
    algos: Annotated[str, typer.Option(help="Comma-separated algorithms.")] = "ppo,grpo",
    envs: Annotated[str, typer.Option(help="Comma-separated built-in env ids.")] = ",".join(DEFAULT_ENVS),
    batches: Annotated[str, typer.Option(help="Comma-separated seed-batch sizes.")] = "1,5,10,20",
    fraction: Annotated[float, typer.Option(help="Share of each env's quick budget per run.")] = 0.1,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (each size keeps its best).")] = 2,
    sb3: Annotated[bool, typer.Option(help="Also time Stable-Baselines3's PPO (classic envs).")] = True,
    matrix: Annotated[
        bool, typer.Option(help="Also time the default matrix: 5 seeds a process per run vs 10 seeds in batches of 10.")
    ] = False,
) -> None:
    """Env steps/s of a worker training a batch of seeds together, per seed-batch size, with ratios to a batch of
    one and to Stable-Baselines3's PPO (same hyperparameters), measured side by side in this process."""
    from rlbench.throughput_bench import matrix_wall_times, throughput

    try:
        algo_names, env_ids = parse_list(algos, "--algos"), parse_list(envs, "--envs")
        for env_id in env_ids:
            if env_id not in BUILTIN_ENVS:
                raise MatrixError(f"--envs: {env_id!r} is not built in; allowed: {', '.join(BUILTIN_ENVS)}")
        sizes = parse_ints(batches, "--batches")
        if 1 not in sizes or min(sizes) < 1:
            raise MatrixError(f"--batches must be sizes ≥ 1 including 1 (the reference), got {batches}")
        if not 0 < fraction <= 1:
            raise MatrixError(f"--fraction must be in (0, 1], got {fraction}")
        if rounds < 1:
            raise MatrixError(f"--rounds must be ≥ 1, got {rounds}")
        others = [name for name in algo_names if name not in NATIVE]
        if others:
            raise MatrixError(f"--algos {', '.join(others)}: not rlbench's loop; allowed: {', '.join(NATIVE)}")
        rows = throughput(algo_names, env_ids, sizes, fraction, rounds, sb3)
    except MatrixError as err:
        raise fail(str(err)) from None
    title = f"env steps/s of one worker (1 thread), {fraction:g} of each quick budget per run, best of {rounds}"
    table = Table(title=title)
    for col in ("algo", "env", "seed batch", "env steps/s", "× batch 1", "× SB3 PPO", "wall (s)"):
        table.add_column(col, justify="left" if col in ("algo", "env") else "right")
    for row in rows.itertuples():
        vs_sb3 = "" if row.vs_sb3 != row.vs_sb3 else f"{row.vs_sb3:.2f}×"
        table.add_row(
            row.algo,
            escape(row.env),
            str(row.seed_batch),
            f"{row.env_steps_per_s:,.0f}",
            f"{row.vs_batch_1:.2f}×",
            vs_sb3,
            f"{row.wall_s:.1f}",
        )
    console.print(table)
    if matrix:
        sweeps = matrix_wall_times()
        table = Table(title="the default matrix (rlbench run --algos all, no report)")
        for col in ("seeds", "seed batch", "runs", "wall (min)"):
            table.add_column(col, justify="right")
        for row in sweeps.itertuples():
            table.add_row(str(row.seeds), str(row.seed_batch), str(row.runs), f"{row.wall_s / 60:.1f}")
        console.print(table)
        old, new = sweeps.wall_s.iloc[0], sweeps.wall_s.iloc[1]
        console.print(f"10 seeds in batches of 10 took {new / old:.2f}× the wall time of 5 seeds a process per run")


@bench_app.command("probe")
def bench_probe(
    algos: Annotated[str, typer.Option(help="Comma-separated algorithms.")] = "ppo,grpo,pg",
    envs: Annotated[str, typer.Option(help="Comma-separated env ids.")] = ",".join(DEFAULT_ENVS),
    preset: Annotated[str, typer.Option(help="Budget preset of the runs.")] = "quick",
    seed: Annotated[int, typer.Option(help="Seed of every run.")] = 0,
    group_size: Annotated[int, typer.Option(help="G of group algorithms.")] = 8,
) -> None:
    """What the gradient-noise probe and the frozen reference's forward passes cost a run: their shares of its
    wall time (one run per algorithm and env, one thread, in this process)."""
    from rlbench.probe_bench import compare

    try:
        runs = compare(parse_list(algos, "--algos"), parse_list(envs, "--envs"), preset, seed, group_size)
    except MatrixError as err:
        raise fail(str(err)) from None
    table = Table(title=f"what measuring costs a {preset} run (seed {seed}, 1 thread)")
    columns = ("algo", "env", "probed updates", "wall (s)", "probe", "reference forward", "measure_share")
    for col in columns:
        table.add_column(col, justify="left" if col in ("algo", "env") else "right")
    for row in runs.itertuples():
        table.add_row(
            row.algo,
            escape(row.env),
            f"{row.probed_updates} of {row.updates}",
            f"{row.wall_time_s:.1f}",
            f"{row.probe_time_s / row.wall_time_s:.1%}",
            f"{row.reference_time_s / row.wall_time_s:.1%}",
            f"{row.measure_share:.1%}",
        )
    console.print(table)


@app.command()
def fingerprints(
    update: Annotated[bool, typer.Option("--update", help="Rewrite the stored fingerprints deliberately.")] = False,
    folder: Annotated[
        Path, typer.Option("--dir", help="Where the fingerprints are stored (run from the source checkout).")
    ] = Path("tests/regression"),
) -> None:
    """Compare every preset's short seeded run with the stored fingerprints (or rewrite them with --update)."""
    from rlbench import fingerprints as fp

    if update:
        changes = fp.regenerate(folder)
        console.print("\n".join(changes) if changes else "fingerprints unchanged", markup=False)
        return
    failed, said = False, ""
    for env_id in fp.ENVS:
        for name in NATIVE:
            path = fp.path_for(folder, name, env_id)
            if not path.is_file():
                failed = True
                console.print(f"{env_id}/{name}: missing {path}", markup=False)
                continue
            stored, fresh = fp.load(path), fp.compute(name, env_id)
            why = fp.comparison(stored, fresh)[1]
            if why != said:
                console.print(f"Compared {why}:", markup=False)
                said = why
            diffs = fp.compare(stored, fresh)
            failed |= bool(diffs)
            console.print(
                f"  {env_id}/{name}: " + "\n    ".join(["DIFFERENT", *diffs] if diffs else ["same"]), markup=False
            )
    if failed:
        raise typer.Exit(1)


@app.command("kl-bias")
def kl_bias() -> None:
    """Exact expected gradient of every KL estimator × placement × sampling vs ∇KL(π‖π_ref) and ∇KL(π_ref‖π)."""
    from rlbench import kl_bias as kb

    table = Table(
        title="Expected gradient g of a KL-to-reference term, exact by enumeration (float64). rev = ∇KL(π‖π_ref), "
        "fwd = ∇KL(π_ref‖π), err = relative error ‖g − x‖/‖x‖"
    )
    columns = ("case", "k", "placement", "samples", "‖g‖/‖rev‖", "cos rev", "err rev", "cos fwd", "err fwd")
    for col in (*columns, "err to on-policy", "follows"):
        table.add_column(col, justify="left" if col in ("case", "k", "placement", "samples", "follows") else "right")
    for r in kb.table():
        table.add_row(
            r.case,
            r.estimator,
            r.placement,
            r.sampling,
            f"{r.norm:.3f}",
            f"{r.cos_reverse:+.3f}",
            f"{r.err_reverse:.1e}",
            f"{r.cos_forward:+.3f}",
            f"{r.err_forward:.1e}",
            "" if r.sampling == "on-policy" or math.isnan(r.err_on_policy) else f"{r.err_on_policy:.1e}",
            r.follows,
        )
    console.print(table)
    console.print(kb.LEGEND, highlight=False, markup=False)


@app.command("check-env")
def check_env_cmd(
    env_id: Annotated[str, typer.Argument(help="A Gymnasium id, e.g. CartPole-v1 or mypkg.envs:Thing-v0.")],
    env_kwargs: Annotated[Optional[str], typer.Option(help="JSON keyword arguments for the env.")] = None,
) -> None:
    """Check an environment against Gymnasium's checker and rlbench's contract; exit 1 if any check fails."""
    try:
        kwargs = parse_env_kwargs(env_kwargs)
        check_env_id(env_id)
    except MatrixError as err:
        raise fail(str(err)) from None
    table = Table(title=f"check-env {escape(env_id)}")
    for col in ("check", "verdict", "detail"):
        table.add_column(col)
    checks = check_contract_isolated(env_id, kwargs, seeded_reset=True)
    for check in checks:
        verdict = "[green]pass[/]" if check.ok else "[bold red]FAIL[/]"
        table.add_row(check.name, verdict, escape(check.detail))
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def kl_setting(cfg: AlgoConfig) -> str:
    """A preset's KL term in words, e.g. `β 0.04 · k3 in loss` (then `× π/π_old` if importance-weighted), or `—`."""
    if cfg.kl_coef == 0:
        return "—"
    weight = " × π/π_old" if cfg.kl_importance_weight else ""
    return f"β {cfg.kl_coef:g} · {cfg.kl_estimator} in {cfg.kl_placement}{weight}"


@app.command("list")
def list_() -> None:
    """Show algorithms (which claims' primary tests use them), built-in envs and presets with their budgets."""
    from rlbench.reports.claims import serves

    algos = Table(title="algorithms")
    for col in (
        "name",
        "in all",
        "claims",
        "advantage",
        "policy loss",
        "critic",
        "KL to reference",
        "collect",
        "description",
    ):
        algos.add_column(col)
    for name, cfg in PRESETS.items():
        algos.add_row(
            name,
            "yes" if name in DEFAULT_ALGOS else "",
            ", ".join(serves(name)),
            cfg.advantage,
            "ratio (no clip)" if cfg.policy_loss == "clip" and cfg.clip is None else cfg.policy_loss,
            "yes" if cfg.uses_critic else "no",
            kl_setting(cfg),
            cfg.collect,
            DESCRIPTIONS[name],
        )
    console.print(algos)
    envs = Table(title="environments (env steps per run)")
    envs.add_column("id")
    for p in BUDGET_PRESETS:
        envs.add_column(p, justify="right")
    for entry in BUILTIN_ENVS.values():
        envs.add_row(entry.id, *(f"{entry.budgets[p]:,}" for p in BUDGET_PRESETS))
    console.print(envs)
    presets = Table(title="presets")
    for col in ("name", "default envs", "seeds", "eval episodes × points", "description"):
        presets.add_column(col)
    for p in BUDGET_PRESETS.values():
        presets.add_row(p.name, ", ".join(p.envs), str(p.seeds), f"{p.eval_episodes} × {p.eval_points}", p.description)
    console.print(presets)


if __name__ == "__main__":
    app()
