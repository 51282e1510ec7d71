"""The worked example in ``examples/``: a hand-written POGO TD3+BC audited through ``--candidate``.

The correct trainer must be bitwise equivalent to the reference; the broken copy (extra actors drawing from the
global torch RNG) must be reported, first at ``rng/torch`` on the first actor step, with a bundle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from checks.equivalence import EquivalenceOptions, equivalence_for_algo, load_factory
from multi_actor.config import build_config
from pogo_audit.cli import main

REPO = Path(__file__).resolve().parents[1]
GOOD = "examples.pogo_adapter:factory"
BROKEN = "examples.pogo_adapter:broken_factory"


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    """``--candidate`` modules are imported relative to the current directory, as from a shell at the repo root."""
    monkeypatch.chdir(REPO)


def td3_bc_config():
    return build_config(None, [], algo="td3_bc", num_actors=3)


def audit(spec, tmp_path, steps=20, **options):
    opts = EquivalenceOptions(steps=steps, seed=0, bundle_dir=str(tmp_path), **options)
    return equivalence_for_algo("td3_bc", td3_bc_config(), opts, candidate=(spec, load_factory(spec, "--candidate")))


def test_user_trainer_imports_nothing_from_this_repository():
    tree = ast.parse((REPO / "examples" / "user_pogo_td3bc.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"reference_algos", "multi_actor", "pogo_audit", "checks", "examples"}, imported


def test_hand_written_trainer_is_equivalent(embedded_dataset, tmp_path):
    res = audit(GOOD, tmp_path)
    assert res.verdict == "pass", res.summary
    groups = {row["group"]: row for row in res.details}
    # every group was really compared, including the W2 oracle on the chain (policies() + actor<i>/w2)
    assert set(groups) == {"critic losses", "actor0 losses", "critic params", "target params", "actor0 params",
                           "rng", "grad leak", "chain (W2 oracle)", "optimizer", "gradients used"}
    assert groups["critic losses"]["steps_compared"] == 20 and groups["actor0 losses"]["steps_compared"] == 10
    assert groups["critic params"]["observables"] == 4 * 12  # 2 critics x 6 tensors x (sum, l2, hash, full)
    assert groups["chain (W2 oracle)"]["observables"] == 2
    assert res.metrics["bundle"] is None and not list(tmp_path.iterdir())


def test_broken_trainer_is_not_equivalent_and_writes_a_bundle(embedded_dataset, tmp_path):
    res = audit(BROKEN, tmp_path)
    assert res.verdict == "fail", res.summary
    first = res.first_divergence
    assert (first.step, first.observable) == (2, "rng/torch"), first  # the chain's draw on the first actor step
    groups = {row["group"]: row for row in res.details}
    assert groups["critic losses"]["first_divergence_step"] == 3  # ... shifts the critic's smoothing noise next
    bundle = Path(res.metrics["bundle"])
    assert bundle.is_file() and bundle.parent == tmp_path and bundle.name == "td3_bc-step2.npz"


def test_sync_init_forgives_a_different_init_but_nothing_else(embedded_dataset, tmp_path):
    """A trainer whose networks come out of a different RNG stream (stands in for a different init order) fails at
    step 0 and passes with sync-init; sync-init does not hide a draw made during training."""
    good = load_factory(GOOD, "--candidate")

    def shifted(config, spec, seed):
        return good(config, spec, seed + 1)

    cfg = td3_bc_config()
    for sync, verdict in ((False, "fail"), (True, "pass")):
        opts = EquivalenceOptions(steps=4, seed=0, bundle_dir=str(tmp_path / str(sync)), sync_init=sync,
                                  self_check=False)
        res = equivalence_for_algo("td3_bc", cfg, opts, candidate=("shifted", shifted))
        assert res.verdict == verdict, res.summary
        if not sync:
            assert res.first_divergence.step == 0
    opts = EquivalenceOptions(steps=4, seed=0, bundle_dir=str(tmp_path / "broken"), sync_init=True, self_check=False)
    res = equivalence_for_algo("td3_bc", cfg, opts, candidate=(BROKEN, load_factory(BROKEN, "--candidate")))
    assert res.verdict == "fail" and res.first_divergence.observable == "rng/torch", res.summary


def test_cli_end_to_end(embedded_dataset, tmp_path, capsys):
    common = ["equivalence", "--algo", "td3_bc", "--steps", "6", "-q", "--bundle-dir", str(tmp_path)]
    assert main([*common, "--candidate", GOOD]) == 0
    out = capsys.readouterr().out
    assert "equivalent: critic and actor0 match the reference for td3_bc" in out
    assert not list(tmp_path.iterdir())

    assert main([*common, "--candidate", BROKEN]) == 1
    out = capsys.readouterr().out
    assert "not equivalent: first divergence at step 2 in rng/torch" in out
    bundle = tmp_path / "td3_bc-step2.npz"
    assert bundle.is_file() and "td3_bc-step2.npz" in out
    assert main(["inspect", str(bundle)]) == 0
    assert "rng/torch" in capsys.readouterr().out
