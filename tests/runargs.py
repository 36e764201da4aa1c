"""The one helper that spells `rlbench run` argument lists in tests."""

from pathlib import Path


def run_args(out: Path | None = None, *, report: bool = False, preset: str = "smoke", **options) -> list[str]:
    """`run --preset PRESET --OPTION VALUE … [--out OUT] [--no-report]`: each keyword becomes its flag (seed_list →
    --seed-list), a list value repeats the flag per item (--set), and the report is off unless a test reads it."""
    args = ["run", "--preset", preset]
    for name, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            args += ["--" + name.replace("_", "-"), str(item)]
    if out is not None:
        args += ["--out", str(out)]
    return args if report else [*args, "--no-report"]


def assert_refused(out: Path, args: list[str], words: list[str]) -> None:
    """`rlbench run --preset smoke --out OUT ARGS…` exits 2 with a message naming every word, and writes nothing."""
    from typer.testing import CliRunner

    from rlbench.cli import app

    result = CliRunner().invoke(app, ["run", "--preset", "smoke", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()
