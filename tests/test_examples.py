"""The worked example in ``examples/``: a hand-written POGO TD3+BC audited through ``--candidate``.

The correct trainer must be bitwise equivalent to the reference; the broken copy (extra actors drawing from the
global torch RNG) must be reported, first at ``rng/torch`` on the first actor step, with a bundle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from checks.equivalence import EquivalenceOptions, equivalence_for_algo
from pogo_audit.core.loading import load_factory
from multi_actor.config import build_config
from pogo_audit.cli.main import main

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


@pytest.mark.parametrize("user_file", ["user_pogo_td3bc.py", "user_pogo_iql_broken.py"])
def test_user_trainer_imports_nothing_from_this_repository(user_file):
    tree = ast.parse((REPO / "examples" / user_file).read_text())
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
                           "rng", "grad leak", "chain (W2 oracle)", "optimizer", "gradients used", "batch"}
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


# ----------------------------------------------------------------------------------- second example: seven defects

IQL_BROKEN = "examples.broken_adapter:factory"
IQL_FIXED = "examples.broken_adapter:fixed_factory"


def iql_config():
    return build_config(None, [], algo="iql", num_actors=3)


def iql_trainer(fixed: bool):
    from examples.broken_adapter import factory, fixed_factory
    from pogo_audit.runtime.data import DatasetSpec

    return (fixed_factory if fixed else factory)(iql_config(), DatasetSpec("x", "Hopper-v5", 11, 3, 1.0), 0)


def iql_batch(seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(64, 11, generator=g), torch.rand(64, 3, generator=g) * 2 - 1, torch.randn(64, 1, generator=g),
            torch.randn(64, 11, generator=g), torch.zeros(64, 1)]


@pytest.mark.heavy
def test_fixed_iql_trainer_is_the_reference_for_50_steps_apart_from_the_harmless_leak(embedded_dataset, tmp_path):
    """With (a)-(c) fixed, critic, actor0, targets, RNG and the W2 chain are bitwise the reference's for 50 steps; the
    only difference is the leak (d): the chain's Q term in the critic's .grad after the step."""
    opts = EquivalenceOptions(steps=50, seed=0, bundle_dir=str(tmp_path), self_check=False)
    res = equivalence_for_algo("iql", iql_config(), opts, candidate=(IQL_FIXED, load_factory(IQL_FIXED, "--candidate")))
    groups = {row["group"]: row for row in res.details}
    for group in ("critic losses", "actor0 losses", "critic params", "target params", "actor0 params", "rng"):
        assert (groups[group]["verdict"], groups[group]["max_abs"]) == ("pass", 0.0), (group, groups[group])
    assert groups["chain (W2 oracle)"]["verdict"] == "pass"
    assert groups["critic losses"]["steps_compared"] == 50 and groups["chain (W2 oracle)"]["observables"] == 2
    if res.verdict == "fail":  # until grad_used/grad_leak hygiene warnings: the leak is the only divergence
        assert res.first_divergence.step == 1
        assert res.first_divergence.observable.startswith("grad_leak/critic/qf/"), res.summary


def test_broken_iql_evaluation_crashes_at_its_first_call_after_reseeding_numpy():
    import numpy as np

    trainer = iql_trainer(fixed=False)
    np.random.seed(123)
    np.random.rand()
    with pytest.raises(AttributeError, match="'tuple' object has no attribute 'reshape'"):
        trainer.evaluate(7, 1)  # (a)
    after = np.random.get_state()
    np.random.seed(7)
    assert all(np.array_equal(a, b) for a, b in zip(after, np.random.get_state()))  # (b): the global stream reset


def test_fixed_iql_evaluation_is_deterministic_and_leaves_every_global_rng_alone():
    import random

    import numpy as np
    import torch

    trainer = iql_trainer(fixed=True)
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    before = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state().clone())
    first = trainer.evaluate(7, 1)
    assert np.isfinite(first["return_mean"]) and trainer.evaluate(7, 1) == first
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]
    assert torch.equal(torch.get_rng_state(), before[2])


def test_broken_iql_never_steps_its_lr_schedule_and_leaks_gradients_into_the_critic():
    from multi_actor.trainer import reference_factory
    from pogo_audit.runtime.data import DatasetSpec

    ref = reference_factory(iql_config(), DatasetSpec("x", "Hopper-v5", 11, 3, 1.0), 0)
    broken, fixed = iql_trainer(fixed=False), iql_trainer(fixed=True)
    for trainer in (ref, broken, fixed):
        trainer.step(iql_batch())
    ref_lr = ref.base.actor_optimizer.param_groups[0]["lr"]
    assert ref_lr < 3e-4  # CORL's cosine schedule moved after one step
    assert broken.user.pi_opt.param_groups[0]["lr"] == 3e-4  # (c) never stepped
    assert fixed.user.pi_opt.param_groups[0]["lr"] == ref_lr
    # (d): after the step, q1's .grad holds the q-loss gradient plus the chain's Q term (the reference: q-loss only)
    leaked = fixed.gradients()["critic/qf/q1.net.0.weight"]
    assert not np.array_equal(leaked, ref.gradients()["critic/qf/q1.net.0.weight"])
    assert fixed.gradients()["critic/vf/v.net.0.weight"].tolist() == ref.gradients()["critic/vf/v.net.0.weight"].tolist()


def test_adapt_proposes_the_adapters_table_for_the_raw_iql_trainer():
    """``pogo-audit adapt`` on the user's object alone proposes exactly the mapping broken_adapter.py uses: IQL's
    TwinQ (and its target) matched to two networks each, in order."""
    from checks.adapt import propose
    from examples.broken_adapter import MODULES, canonical, raw_factory
    from pogo_audit.runtime.data import DatasetSpec

    spec = DatasetSpec("x", "Hopper-v5", 11, 3, 1.0)
    p = propose("iql", iql_config(), spec, "examples.broken_adapter:raw_factory", raw_factory)
    assert p.complete and p.unmatched_candidate == []
    user = raw_factory(iql_config(), spec, 0)
    expected = {f"{m}/{k}": canonical(m, k) for m in MODULES for k in getattr(user, m).state_dict()}
    assert p.mapping == expected
    assert [(m.reference, m.candidates, m.composite) for m in p.modules] == [
        ("actor0/actor", ["pi"], False), ("critic/qf", ["q1", "q2"], True), ("critic/vf", ["v"], False),
        ("target/q_target", ["q1_targ", "q2_targ"], True)]
    assert p.extra_actors == {"chain.0": "actor1", "chain.1": "actor2"}
    assert p.notes == ["the candidate has no step(batch): log keys were not matched"]


@pytest.mark.heavy
def test_isolate_locates_each_training_loop_defect_of_the_broken_trainer(embedded_dataset):
    """One ``--isolate`` run with the evaluation audit names (c) at the actor optimizer step its schedule step should
    follow, (a) at the crashing line and (b) at the reseeding line; the leak (d) stays a hygiene warning."""
    import inspect

    import examples.user_pogo_iql_broken as user

    src = inspect.getsource(user).splitlines()

    def line_of(text):
        (n,) = [i + 1 for i, s in enumerate(src) if text in s]
        return n

    opts = EquivalenceOptions(steps=12, seed=0, bundle_dir=None, self_check=False, isolate=True, eval_every=10,
                              eval_episodes=1)
    res = equivalence_for_algo("iql", iql_config(), opts, candidate=(IQL_BROKEN, load_factory(IQL_BROKEN, "--candidate")))
    found = {f["observable"]: f for f in res.metrics["findings"]}
    path = "examples/user_pogo_iql_broken.py"
    schedule = found["optim/actor0/actor"]
    assert (schedule["location"]["path"], schedule["location"]["line"]) == (path, line_of("self.pi_opt.step()"))
    assert schedule["localisation"]["message"].startswith("candidate skips the reference's learning-rate schedule step")
    assert found["eval/ok"]["location"]["line"] == line_of("s = (torch.tensor(state.reshape(1, -1)")
    assert found["eval/rng_untouched/numpy"]["location"]["line"] == line_of("np.random.seed(seed)  # (b)")
    assert res.verdict == "fail" and [w["observable"].split("/")[0] for w in res.metrics["warnings"]] == ["grad_leak"]
