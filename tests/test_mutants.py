"""Mutants are one-line patches of the real code: built from the source, located at the mutated line of the real
file, refused when stale, installed on one candidate only."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import traceback

import pytest

from checks.mutants import Behaviour, Mutant, catalog, resolve_together, run_mutant
from checks.mutants.model import attribute, method_of
from checks.source_patch import REPO_ROOT, SourceLine, SourcePatch, SourcePatchError, build_together, reroute
from reference_algos.torch import iql, td3_bc


def by_name(name: str) -> Mutant:
    return next(m for m in catalog() if m.name == name)


def file_line(path: str, line: int) -> str:
    return (REPO_ROOT / path).read_text().splitlines()[line - 1].strip()


@pytest.fixture
def scratch_module(tmp_path, request):
    """Write ``source`` as a fresh module file and import it (so tests can change the file under a live function)."""

    def make(source: str):
        name = f"scratch_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module, path

    yield make
    for key in [k for k in sys.modules if k.startswith("scratch_")]:
        del sys.modules[key]


# ------------------------------------------------------------------------------------------------ the catalog


def test_every_mutant_builds_at_the_mutated_line_of_the_real_file():
    mutants = catalog()
    assert len(mutants) == 39 and len({m.name for m in mutants}) == 39
    for m in mutants:
        loc = m.location()
        assert (REPO_ROOT / loc["path"]).is_file(), m.name
        assert file_line(loc["path"], loc["line"]) == loc["original"], m.name
        original, replacement = m.resolve()
        assert replacement is not original, m.name
        if isinstance(m.patch, Behaviour):
            assert loc["mutated"] is None
            continue
        built = m.patch.build()
        changed = [i for i, (a, b) in enumerate(zip(built.original_source, built.mutated_source)) if a != b]
        assert len(built.original_source) == len(built.mutated_source), m.name
        assert len(changed) == 1 if m.patch.lines == 1 else 1 < len(changed) <= m.patch.lines, m.name
        start = built.function.__code__.co_firstlineno
        assert start + changed[0] == loc["line"], m.name
        assert built.mutated_source[changed[0]].strip() == loc["mutated"] != loc["original"], m.name
        assert built.function.__code__.co_filename == str((REPO_ROOT / loc["path"]).resolve()), m.name


def test_only_the_ott_solver_mutant_is_behavioural_and_it_says_why():
    behavioural = [m for m in catalog() if isinstance(m.patch, Behaviour)]
    assert [m.name for m in behavioural] == ["jax_sinkhorn_plan_normalized"]
    assert "OTT" in behavioural[0].patch.why


@pytest.mark.parametrize("name, path, original, mutated", [
    ("td3_target_without_min", "reference_algos/torch/td3_bc.py", "target_q = torch.min(target_q1, target_q2)",
     "target_q = target_q1"),
    ("iql_q_loss_sum", "reference_algos/torch/iql.py", "return sum(F.mse_loss(q, targets) for q in qs) / len(qs)",
     "return sum(F.mse_loss(q, targets) for q in qs)"),
    ("edac_diversity_dropped", "reference_algos/torch/edac.py",
     "return critic_loss + self.eta * self._critic_diversity_loss(state, action)", "return critic_loss"),
    ("reference_actor_after_update", "multi_actor/trainer.py",
     "self._snapshot0 = copy.deepcopy(self.actor0).requires_grad_(False) if self.actors else None",
     "self._snapshot0 = self.actor0 if self.actors else None"),
    ("jax_bc_coefs_swapped", "reference_algos/jax/rebrac.py",
     "critic_kwargs = dict(gamma=cfg.gamma, critic_bc_coef=cfg.critic_bc_coef, policy_noise=cfg.policy_noise,",
     "critic_kwargs = dict(gamma=cfg.gamma, critic_bc_coef=cfg.actor_bc_coef, policy_noise=cfg.policy_noise,"),
    ("jax_sinkhorn_plan_normalized", "multi_actor/w2_jax.py", "value, _ = ott_sd.sinkhorn_divergence(", None),
])
def test_representative_locations_name_the_real_line(name, path, original, mutated):
    loc = by_name(name).location()
    assert (loc["path"], loc["original"], loc["mutated"]) == (path, original, mutated)
    assert file_line(path, loc["line"]) == original


def test_a_swap_is_located_at_its_first_changed_line():
    loc = by_name("sac_n_actor_critic_order_swapped").location()
    assert loc["path"] == "reference_algos/torch/sac_n.py"
    assert loc["original"] == "actor_loss_value, actor_batch_entropy, q_policy_std = self._update_actor(state)"
    assert loc["mutated"] == "critic_loss_value = self._update_critic(state, action, reward, next_state, done)"
    assert file_line(loc["path"], loc["line"] + 1) == loc["mutated"]


def test_building_a_mutant_leaves_every_module_untouched():
    import multi_actor.policies
    import multi_actor.trainer
    import multi_actor.w2
    from reference_algos.jax import rebrac
    from reference_algos.torch import awac, cql, edac, sac_n

    modules = [iql, td3_bc, cql, awac, sac_n, edac, rebrac, multi_actor.trainer, multi_actor.policies,
               multi_actor.w2]
    classes = [iql.ImplicitQLearning, td3_bc.TD3BC, cql.ContinuousCQL, awac.AdvantageWeightedActorCritic,
               sac_n.SACN, edac.EDAC, multi_actor.trainer.MultiActorTrainer]
    before = [dict(vars(m)) for m in modules] + [dict(vars(c)) for c in classes]
    for m in catalog():
        m.resolve()
    after = [dict(vars(m)) for m in modules] + [dict(vars(c)) for c in classes]
    for b, a in zip(before, after):
        assert b.keys() == a.keys() and all(b[k] is a[k] for k in b)


# ------------------------------------------------------------------------------------------- stale / bad patches


def test_a_fragment_that_no_longer_matches_fails_to_build_with_a_clear_error():
    patch = SourcePatch(td3_bc.TD3BC._critic_targets, "torch.min(target_q1, target_q3)", "target_q1")
    with pytest.raises(SourcePatchError) as err:
        patch.build()
    msg = str(err.value)
    assert "TD3BC._critic_targets" in msg and "reference_algos/torch/td3_bc.py" in msg
    assert "'torch.min(target_q1, target_q3)' not found" in msg
    with pytest.raises(SourcePatchError, match="'torch.min\\(target_q1, target_q3\\)' not found"):
        SourceLine(td3_bc.TD3BC._critic_targets, "torch.min(target_q1, target_q3)").location()


def test_a_fragment_found_twice_fails_to_build():
    with pytest.raises(SourcePatchError, match=r"TD3BC._update_targets .*'soft_update\(' found 3 times"):
        SourcePatch(td3_bc.TD3BC._update_targets, "soft_update(", "print(").build()


def test_a_live_function_whose_file_changed_no_longer_builds(scratch_module):
    module, path = scratch_module("""
        def loss(a, b):
            return (a - b) ** 2 / 2
    """)
    patch = SourcePatch(module.loss, " / 2", "")
    assert patch.build().function(3, 1) == 4
    path.write_text(path.read_text().replace("** 2 / 2", "** 2 * 0.5"))
    with pytest.raises(SourcePatchError, match=r"loss \(.*:2\): fragment ' / 2' not found"):
        patch.build()


def test_a_stale_mutant_is_an_error_result_not_a_run():
    stale = Mutant("stale", "td3_bc", "stale fragment", "critic losses",
                   SourcePatch(td3_bc.TD3BC._critic_targets, "torch.min(target_q1, target_q3)", "target_q1"))
    res = run_mutant(stale)
    assert res.verdict == "error" and res.steps_compared == 0
    assert res.summary.startswith("mutant does not build: TD3BC._critic_targets")
    assert res.metrics["killed"] is False and res.metrics["location"] is None


def test_patches_keep_the_line_count_and_their_declared_span():
    with pytest.raises(SourcePatchError, match="keep the line count"):
        SourcePatch(td3_bc.TD3BC._critic_targets, "target_q = torch.min(target_q1, target_q2)",
                    "target_q = target_q1\n            target_q = target_q").build()
    swap = "target_q1 = self.critic_1_target(next_state, next_action)\n" \
           "            target_q2 = self.critic_2_target(next_state, next_action)"
    with pytest.raises(SourcePatchError, match="spans 2 line"):
        SourcePatch(td3_bc.TD3BC._critic_targets, swap, swap).build()
    with pytest.raises(SourcePatchError, match="changes nothing"):
        SourcePatch(td3_bc.TD3BC._critic_targets, swap, swap, lines=2).build()


def test_a_class_private_name_is_refused(scratch_module):
    module, _ = scratch_module("""
        class A:
            def f(self):
                return self.__x + 1
    """)
    with pytest.raises(SourcePatchError, match="class-private name __x"):
        SourcePatch(module.A.f, "+ 1", "+ 2").build()


# ------------------------------------------------------------------------------------ compiled where it belongs


def test_the_patched_function_runs_in_the_real_file_and_line(scratch_module):
    module, path = scratch_module("""
        SCALE = 3


        def f(x):
            y = x * SCALE
            return y + 1
    """)
    built = SourcePatch(module.f, "return y + 1", "return y / 0").build()
    assert built.location.line == 7 and built.location.mutated == "return y / 0"
    with pytest.raises(ZeroDivisionError) as err:
        built.function(2)
    frame = traceback.extract_tb(err.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno, frame.name) == (str(path), 7, "f")
    assert module.f(2) == 7  # the module keeps its function


def test_super_and_closures_survive_a_patch_and_only_the_instance_changes(scratch_module):
    module, _ = scratch_module("""
        def make(offset):
            class Base:
                def value(self):
                    return 10

            class Child(Base):
                def value(self):
                    return super().value() + offset

            return Child
    """)
    Child = module.make(5)
    built = SourcePatch(Child.value, "+ offset", "- offset").build()
    a, b = Child(), Child()
    method_of(lambda t: t)(a, Child.value, built.function)
    assert (a.value(), b.value(), Child().value()) == (5, 15, 15)
    assert "value" in vars(a) and "value" not in vars(b)


def test_install_refuses_an_instance_that_does_not_run_the_patched_code():
    built = SourcePatch(td3_bc.TD3BC._critic_targets, "torch.min(target_q1, target_q2)", "target_q1").build()

    class Holder:
        base = object.__new__(iql.ImplicitQLearning)
        w2_fn = staticmethod(len)

    with pytest.raises(SourcePatchError, match="would not reach"):
        method_of(lambda t: t.base)(Holder(), td3_bc.TD3BC._critic_targets, built.function)
    with pytest.raises(SourcePatchError, match="would not reach"):
        attribute("w2_fn")(Holder(), td3_bc.TD3BC._critic_targets, built.function)


def test_reroute_reaches_a_shared_function_only_through_the_copy(scratch_module):
    module, _ = scratch_module("""
        def formula(x):
            return x / 2


        def caller(x):
            return formula(x) + 1


        def other(x):
            return formula(x) - 1
    """)
    mutated = SourcePatch(module.formula, " / 2", " * 2").build().function
    copy = reroute(module.caller, module.formula, mutated)
    assert (copy(4), module.caller(4), module.other(4)) == (9, 3, 1)
    assert module.formula is not mutated and module.caller.__globals__["formula"] is module.formula
    with pytest.raises(SourcePatchError, match="does not call"):
        reroute(module.formula, module.caller, mutated)


def test_patches_of_one_function_build_together_and_overlaps_are_refused(scratch_module):
    module, _ = scratch_module("""
        def f(x):
            y = x + 1
            z = y * 2
            return z - 3
    """)
    function, locations = build_together([SourcePatch(module.f, "x + 1", "x + 10"),
                                          SourcePatch(module.f, "z - 3", "z - 30")])
    assert function(0) == 20 - 30 and module.f(0) == -1
    assert [(loc.line, loc.mutated) for loc in locations] == [(3, "y = x + 10"), (5, "return z - 30")]
    with pytest.raises(SourcePatchError, match="share a line"):
        build_together([SourcePatch(module.f, "x + 1", "x + 10"), SourcePatch(module.f, "y = x", "y = -x")])
    with pytest.raises(SourcePatchError, match="different functions"):
        build_together([SourcePatch(module.f, "x + 1", "x + 10"),
                        SourcePatch(td3_bc.TD3BC._critic_targets, "torch.min(target_q1, target_q2)", "target_q1")])


def test_mutants_of_one_call_chain_reach_the_candidate_together(scratch_module):
    """Two bugs in the same function and one in its callee, each reached through ``via``: one installed caller runs
    all three; the module keeps its functions."""
    module, _ = scratch_module("""
        def inner(x):
            return x + 1


        def middle(x):
            a = inner(x)
            return a * 2


        def outer(x):
            b = middle(x)
            return b - 3
    """)

    class Holder:
        fn = staticmethod(module.outer)

    common = dict(algo="iql", description="", expected="critic losses", install=attribute("fn"))
    trio = [Mutant("a", patch=SourcePatch(module.inner, "x + 1", "x + 100"), via=(module.outer, module.middle),
                   **common),
            Mutant("b", patch=SourcePatch(module.middle, "a * 2", "a * 20"), via=(module.outer,), **common),
            Mutant("c", patch=SourcePatch(module.outer, "b - 3", "b - 300"), **common)]
    ((install, original, replacement),) = resolve_together(trio)
    assert original is module.outer and replacement(0) == 100 * 20 - 300
    holder = Holder()
    install(holder, original, replacement)
    assert holder.fn(0) == 1700 and module.outer(0) == -1 and Holder.fn(0) == -1
    assert [m.resolve()[1](0) for m in trio] == [(100 * 2) - 3, 20 - 3, 2 - 300]


def test_every_countable_jax_mutant_combines_with_every_other():
    pytest.importorskip("jax")
    from checks.mutants.accuracy import combinable, combined_factory, combined_overrides

    pool = [m for m in catalog() if m.framework == "jax" and combinable(m)]
    assert len(pool) >= 7
    for i, a in enumerate(pool):
        for b in pool[i + 1:]:
            combined_factory([a, b])
            combined_overrides([a, b])


# ------------------------------------------------------------------------------------ the reference is untouched


def test_the_reference_is_unchanged_while_a_mutant_is_active(embedded_dataset):
    from multi_actor.config import build_config
    from multi_actor.loop import prepare_data
    from multi_actor.trainer import multi_actor_factory, reference_factory
    from pogo_audit.runtime.data import ReplayBuffer

    cfg = build_config(None, [], algo="iql", num_actors=3, seed=0)
    data = prepare_data(cfg)
    batch = ReplayBuffer(data.processed, 7).sample(32)
    formula, method = iql.twin_q_loss, iql.ImplicitQLearning._update_q
    before = reference_factory(cfg, data.spec, 0).step(batch)

    mutant = by_name("iql_q_loss_sum")  # a module-level formula shared by reference and candidate
    active = mutant.factory(cfg, data.spec, 0)
    mutated = active.step(batch)
    clean = multi_actor_factory(cfg, data.spec, 0).step(batch)
    after = reference_factory(cfg, data.spec, 0).step(batch)

    assert after == before and clean["critic/q_loss"] == before["critic/q_loss"]
    assert mutated["critic/q_loss"] == 2 * before["critic/q_loss"]  # the sum of the two MSEs, not their mean
    assert iql.twin_q_loss is formula and iql.ImplicitQLearning._update_q is method
    assert "_update_q" in vars(active.base)
