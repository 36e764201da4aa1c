"""The guides' examples are executed as written, so they cannot go stale."""

import os
import re
import subprocess
import sys
from pathlib import Path

import rlbench.algos

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(doc: str) -> list[tuple[str, str]]:
    return BLOCK.findall((DOCS / doc).read_text())


def materialize(doc: str, workdir: Path) -> list[Path]:
    """Write every block that starts with `# file: PATH`; `algos/…` goes into the installed rlbench.algos."""
    written = []
    for _, body in blocks(doc):
        first, _, rest = body.partition("\n")
        match = re.fullmatch(r"# file: (\S+)", first.strip())
        if not match:
            continue
        name = match.group(1)
        if name.startswith("algos/"):
            target = Path(rlbench.algos.__path__[0]) / name.removeprefix("algos/")
            assert not target.exists(), f"{target} exists already; the doc example would overwrite it"
        else:
            target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rest)
        written.append(target)
    return written


def run_shell_blocks(doc: str, workdir: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    output = []
    for lang, body in blocks(doc):
        if lang != "bash":
            continue
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{doc} block failed:\n{body}\n{result.stdout}\n{result.stderr}"
        output.append(result.stdout)
    return "\n".join(output)


def test_add_an_algorithm_guide(tmp_path):
    written = materialize("add-an-algorithm.md", tmp_path)
    try:
        output = run_shell_blocks("add-an-algorithm.md", tmp_path)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    assert "dapo" in output
    assert (tmp_path / "runs/dapo-demo/CartPole-v1/dapo-g4/seed0/summary.json").is_file()
    assert (tmp_path / "runs/ppo-noclip/CartPole-v1/ppo[clip=none]/seed0/summary.json").is_file()
    side = tmp_path / "runs/ppo-side/CartPole-v1"
    assert sorted(p.name for p in side.iterdir()) == ["ppo", "ppo[clip=none,epochs=1]"]


def test_add_an_environment_guide(tmp_path):
    materialize("add-an-environment.md", tmp_path)
    output = run_shell_blocks("add-an-environment.md", tmp_path)
    assert "FAIL" not in output and "seeded reset reproducible" in output
    corridor = "corridor--corridor__Corridor-v0"
    for sweep in ("runs/corridor", "runs/corridor-matrix"):
        summaries = list((tmp_path / sweep / corridor).glob("*/seed*/summary.json"))
        assert len(summaries) == 4, sweep
    assert list((tmp_path / "runs/corridor-module" / corridor).glob("ppo/seed0/summary.json"))
    html = (tmp_path / "runs/corridor/report/report.html").read_text()
    assert "Corridor-v0" in html


def run_python_blocks(doc: str, workdir: Path) -> str:
    """Every `python` block of the doc, in order, as one script (as a notebook runs its cells); its stdout."""
    script = "\n".join(body for lang, body in blocks(doc) if lang == "python")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=600, env=os.environ
    )
    assert result.returncode == 0, f"{doc} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_python_api_guide(tmp_path):
    output = run_python_blocks("python-api.md", tmp_path)
    assert "'a2c'" in output and "allowed" in output
    assert not (tmp_path / "runs/typo").exists()
    sweep = tmp_path / "runs/api-demo"
    assert len(list(sweep.glob("CartPole-v1/*/seed*/summary.json"))) == 4
    assert "ppo[epochs=2]" in output
    assert (sweep / "report/report.html").is_file() and "runs/api-demo/report/report.html" in output
