"""Regression fingerprints: every preset's short seeded CartPole run equals the stored one, and a 0.1 % change
to a loss is caught. Regenerate deliberately with `rlbench.fingerprints.regenerate` (`rlbench fingerprints
--update`) and review the printed differences."""

import copy
import json

import pytest

from rlbench import fingerprints
from rlbench.algos import PRESETS, losses

STORED = fingerprints.DEFAULT_DIR


CASES = [(env_id, name) for env_id in fingerprints.ENVS for name in PRESETS]


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
    mode = "exactly" if fingerprints.exact_mode(old, new) else f"within rtol {fingerprints.RTOL:g}"
    assert not diffs, f"{name} on {env_id} no longer reproduces its fingerprint ({mode}):\n" + "\n".join(diffs)


def test_fingerprint_is_json_with_round_trip_floats(fresh):
    fp = fresh["CartPole-v1", "ppo"]
    assert fp["environment"]["threads"] == fingerprints.THREADS
    assert not any(k.startswith("time/") for row in fp["metrics"] for k in row)
    assert json.loads(fingerprints.dumps(fp)) == fp  # repr precision: floats come back bit-identical


def shifted_environment(fp: dict) -> dict:
    """The same fingerprint as if produced by another torch version: compare() must fall back to tolerance."""
    other = copy.deepcopy(fp)
    other["environment"]["torch"] = "0.0.0-elsewhere"
    return other


def test_tolerance_mode_accepts_tiny_noise_but_exact_mode_does_not(fresh):
    fp = fresh["CartPole-v1", "ppo"]
    noisy = copy.deepcopy(fp)
    row = noisy["metrics"][-1]
    row["train/policy_loss"] *= 1 + 1e-7
    assert fingerprints.compare(fp, noisy), "exact mode must see a 1e-7 relative change"
    assert not fingerprints.compare(shifted_environment(fp), noisy), "tolerance mode must accept 1e-7"


def scaled(fn, factor):
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) * factor

    return wrapper


@pytest.mark.parametrize(
    "name, perturb",
    [
        ("ppo", lambda mp: mp.setitem(PRESETS, "ppo", PRESETS["ppo"].replace(vf_coef=0.501))),
        ("ppo", lambda mp: mp.setattr(losses, "clipped_surrogate", scaled(losses.clipped_surrogate, 1.001))),
        ("pg", lambda mp: mp.setattr(losses, "pg_loss", scaled(losses.pg_loss, 1.001))),
    ],
    ids=["ppo-vf_coef-0.501", "ppo-clipped_surrogate-x1.001", "pg-pg_loss-x1.001"],
)
def test_a_small_change_to_a_loss_is_reported(name, perturb, monkeypatch, fresh):
    perturb(monkeypatch)
    changed = fingerprints.compute(name)
    reference = stored(name)
    exact = fingerprints.compare(reference, changed)
    assert exact, f"perturbing {name}'s loss by 0.1 % went unnoticed"
    # Also beyond the cross-platform tolerance, and in the trained numbers, not only in the loss columns.
    loose = fingerprints.compare(shifted_environment(reference), changed)
    assert loose, f"perturbing {name}'s loss by 0.1 % hides inside rtol {fingerprints.RTOL:g}"
    beyond_loss = [d for d in loose if " train/" in d and "loss" not in d.split(":")[0]]
    assert beyond_loss, loose
    print(f"\n{name}: {len(exact)} difference lines, e.g. {exact[0]}")


def test_regenerate_reports_changes(tmp_path, fresh, monkeypatch):
    monkeypatch.setattr(fingerprints, "compute", lambda name, env_id: copy.deepcopy(fresh[env_id, name]))
    for env_id, name in CASES:
        path = fingerprints.path_for(tmp_path, name, env_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fingerprints.dumps(fresh[env_id, name]))
    assert fingerprints.regenerate(tmp_path) == []

    grpo, ppo = (fingerprints.path_for(tmp_path, n, "CartPole-v1") for n in ("grpo", "ppo"))
    old = copy.deepcopy(fresh["CartPole-v1", "grpo"])
    old["metrics"][0]["train/loss"] += 1.0
    grpo.write_text(fingerprints.dumps(old))
    ppo.unlink()
    (grpo.parent / "a2c.json").write_text("{}")
    changes = fingerprints.regenerate(tmp_path)
    assert any(c.startswith("CartPole-v1/grpo: metrics row 0") and "train/loss" in c for c in changes), changes
    assert any(c.startswith("CartPole-v1/ppo: new fingerprint") for c in changes), changes
    assert any("a2c.json" in c for c in changes)
    assert fingerprints.load(grpo) == fresh["CartPole-v1", "grpo"]
    assert fingerprints.load(ppo) == fresh["CartPole-v1", "ppo"]
