"""Regression fingerprints: every preset's short seeded run equals the stored one — exactly where the CPU and
kernel path match, within the stated tolerance where they do not (shown for real on a second kernel path of this
CPU) — and a 0.1 % change to a loss is caught on both paths. Regenerate deliberately with `rlbench fingerprints
--update` and review the printed differences."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlbench import fingerprints
from rlbench.algos import NATIVE, PRESETS, losses

STORED = Path(__file__).parent / "regression"


CASES = [(env_id, name) for env_id in fingerprints.ENVS for name in NATIVE]


@pytest.fixture(scope="module")
def fresh() -> dict[tuple[str, str], dict]:
    return {(env_id, name): fingerprints.compute(name, env_id) for env_id, name in CASES}


def stored(name: str, env_id: str = "CartPole-v1") -> dict:
    path = fingerprints.path_for(STORED, name, env_id)
    assert path.is_file(), f"no fingerprint {path}; run `rlbench fingerprints --update` to create it"
    return fingerprints.load(path)


@pytest.mark.parametrize("env_id, name", CASES)
def test_fresh_fingerprint_equals_stored(env_id, name, fresh):
    old = stored(name, env_id)
    new = fresh[env_id, name]
    diffs = fingerprints.compare(old, new)
    _, why = fingerprints.comparison(old, new)
    assert not diffs, f"{name} on {env_id} no longer reproduces its fingerprint ({why}):\n" + "\n".join(diffs)


def test_fingerprint_is_json_with_round_trip_floats(fresh):
    fp = fresh["CartPole-v1", "ppo"]
    assert fp["environment"]["threads"] == fingerprints.THREADS
    assert fp["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(fingerprints.MATCH_KEYS) <= set(fp["environment"])
    assert not any(k.startswith("time/") for row in fp["metrics"] for k in row)
    assert json.loads(fingerprints.dumps(fp)) == fp  # repr precision: floats come back bit-identical


def test_tolerance_mode_accepts_tiny_noise_but_exact_mode_does_not(fresh):
    fp = fresh["CartPole-v1", "ppo"]
    noisy = copy.deepcopy(fp)
    row = noisy["metrics"][-1]
    row["train/policy_loss"] *= 1 + 1e-7
    assert fingerprints.compare(fp, noisy), "exact mode must see a 1e-7 relative change"
    elsewhere = copy.deepcopy(fp)
    elsewhere["environment"]["cpu_capability"] = "ELSEWHERE"
    assert not fingerprints.compare(elsewhere, noisy), "tolerance mode must accept 1e-7"


def test_comparison_names_what_differs(fresh):
    fp = fresh["rlbench/TextGen-v0", "pg"]
    exact, why = fingerprints.comparison(fp, fp)
    assert exact and why.startswith("exact"), why
    old = copy.deepcopy(fp)
    old["environment"]["cpu_model"] = "Some Other CPU"
    del old["environment"]["cpu_capability"]
    exact, why = fingerprints.comparison(old, fp)
    assert not exact and "cpu_model 'Some Other CPU'" in why and "cpu_capability 'not recorded'" in why, why


def scaled(fn, factor):
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) * factor

    return wrapper


PERTURBATIONS = {
    "CartPole-v1/ppo/vf_coef×1.001": lambda mp: mp.setitem(PRESETS, "ppo", PRESETS["ppo"].replace(vf_coef=0.5005)),
    "CartPole-v1/ppo/clipped_surrogate×1.001": lambda mp: mp.setattr(
        losses, "clipped_surrogate", scaled(losses.clipped_surrogate, 1.001)
    ),
    "CartPole-v1/pg/pg_loss×1.001": lambda mp: mp.setattr(losses, "pg_loss", scaled(losses.pg_loss, 1.001)),
    "rlbench/TextGen-v0/ppo/clipped_surrogate×1.001": lambda mp: mp.setattr(
        losses, "clipped_surrogate", scaled(losses.clipped_surrogate, 1.001)
    ),
    "rlbench/TextGen-v0/pg/pg_loss×1.001": lambda mp: mp.setattr(losses, "pg_loss", scaled(losses.pg_loss, 1.001)),
}
"""0.1 % changes to a loss coefficient, by 'env/preset/what'."""


def perturbed(key: str) -> dict:
    """The fingerprint with PERTURBATIONS[key] applied."""
    env_id, name, _ = key.rsplit("/", 2)
    with pytest.MonkeyPatch.context() as mp:
        PERTURBATIONS[key](mp)
        return fingerprints.compute(name, env_id)


def split_key(key: str) -> tuple[str, str]:
    env_id, name, _ = key.rsplit("/", 2)
    return env_id, name


OTHER_CAPABILITY = "default"
"""ATEN_CPU_CAPABILITY of the second kernel path: the portable kernels, which every x86-64 CPU runs and which
round differently from the AVX2/AVX-512 ones (measured: up to 8.8e-5 of a column's scale)."""


def on_other_kernel_path() -> dict:
    """Every fresh fingerprint and every perturbed one, computed in a subprocess on the DEFAULT kernel path."""
    code = (
        "import json, sys, torch; sys.path.insert(0, sys.argv[1]); import test_fingerprints as t; "
        "torch.set_num_threads(1); print(json.dumps(t.kernel_path_results()))"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY=OTHER_CAPABILITY)
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def kernel_path_results() -> dict:
    """{'fresh': {env/name: fingerprint}, 'perturbed': {key: fingerprint}} on the running process's kernels."""
    return {
        "fresh": {f"{env_id}/{name}": fingerprints.compute(name, env_id) for env_id, name in CASES},
        "perturbed": {key: perturbed(key) for key in PERTURBATIONS},
    }


@pytest.fixture(scope="module")
def other_path() -> dict:
    if torch.backends.cpu.get_cpu_capability() == OTHER_CAPABILITY.upper():
        pytest.skip("this CPU already runs the DEFAULT kernels: there is no second kernel path to compare with")
    return on_other_kernel_path()


@pytest.mark.parametrize("env_id, name", CASES)
def test_another_kernel_path_reproduces_within_tolerance(env_id, name, fresh, other_path):
    new = other_path["fresh"][f"{env_id}/{name}"]
    assert new["environment"]["cpu_capability"] == OTHER_CAPABILITY.upper()
    exact, why = fingerprints.comparison(fresh[env_id, name], new)
    assert not exact and "cpu_capability" in why, why
    for old in (fresh[env_id, name], stored(name, env_id)):
        diffs = fingerprints.compare(old, new)
        assert not diffs, f"{name} on {env_id} on the {OTHER_CAPABILITY} kernels:\n" + "\n".join(diffs)


@pytest.mark.parametrize("key", list(PERTURBATIONS))
def test_a_small_change_to_a_loss_is_caught_on_both_paths(key, fresh, other_path):
    env_id, name = split_key(key)
    reference = fresh[env_id, name]
    here = perturbed(key)
    assert fingerprints.comparison(reference, here)[0], "same process, same kernels: the exact path"
    assert fingerprints.compare(reference, here), f"{key} went unnoticed on the exact path"
    elsewhere = other_path["perturbed"][key]
    assert not fingerprints.comparison(reference, elsewhere)[0], "another kernel path: the tolerance path"
    for old in (reference, stored(name, env_id)):
        loose = fingerprints.compare(old, elsewhere)
        assert loose, f"{key} hides inside rtol {fingerprints.RTOL:g} on the {OTHER_CAPABILITY} kernels"
        # Caught in the trained numbers, not only in the loss columns the change scales directly.
        assert any(" eval/" in d or (" train/" in d and "loss" not in d.split(":")[0]) for d in loose), loose


def test_cli_says_which_comparison_it_made(fresh, monkeypatch):
    from typer.testing import CliRunner

    from rlbench.cli import app

    monkeypatch.setattr(fingerprints, "compute", lambda name, env_id: copy.deepcopy(fresh[env_id, name]))
    result = CliRunner().invoke(app, ["fingerprints", "--dir", str(STORED)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # Rich wraps long lines
    for env_id, name in CASES:
        why = fingerprints.comparison(stored(name, env_id), fresh[env_id, name])[1]
        assert f"Compared {why}:" in words
        assert f"{env_id}/{name}: same" in words
