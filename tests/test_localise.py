"""Localisation names the mutated line: mutants are one-line patches of the real code, so each kind of defect (an
extra draw, a changed formula, a swapped update order, a leaking gradient) must be located at exactly that line."""

from __future__ import annotations

import copy
import inspect
import json
import types

import numpy as np
import pytest
import torch

from checks.localise import localise_step
from checks.localise.frames import is_user_file
from checks.mutants.accuracy import localisation_accuracy, localise_mutant
from checks.mutants import catalog
from multi_actor.algorithms import get_algorithm
from multi_actor.config import build_config
from multi_actor.loop import prepare_data
from multi_actor.trainer import multi_actor_factory, reference_factory
from pogo_audit.runtime.data import ReplayBuffer
from pogo_audit.core.harness import IsolatedTrainer

BATCH = 32


def by_name(name: str):
    return next(m for m in catalog() if m.name == name)


#: what the message of some kinds must say, and the rule that located it
MESSAGES = {
    "actor1_extra_global_draw": ("random_draw", "candidate draws an extra `randn_like([256, 3])` (global)"),
    "iql_v_loss_online_q": ("module_swap", "candidate calls `critic/qf` (call 0) where the reference runs "
                                           "`target/q_target`"),
    "sac_n_actor_critic_order_swapped": ("call_path", "candidate calls `SACN._update_critic` where the reference "
                                                      "calls `SACN._update_actor`"),
    "td3_total_it_incremented_twice": (None, "reads `self.total_it` = 2, the reference's 1; last assigned"),
}


@pytest.mark.heavy
@pytest.mark.parametrize("name, kind", [
    ("actor1_extra_global_draw", "rng"),             # actor 1 samples from the global torch stream
    ("eval_reseeds_global_numpy", "rng"),            # np.random.seed inside the evaluation
    ("td3_target_without_min", "numeric"),           # target_q = target_q1 (a skipped operation)
    ("iql_q_loss_sum", "numeric"),                   # "/ len(qs)" dropped inside a loss helper
    ("td3_bc_scaled_by_alpha", "numeric"),           # an extra factor in the actor loss
    ("sac_n_actor_critic_order_swapped", "order"),   # the actor and critic updates swapped
    ("td3_actor_target_updated_twice", "order"),     # a second soft update from the same line
    ("td3_total_it_incremented_twice", "order"),     # a counter the policy-delay condition reads
    ("cql_policy_loss_after_critic_step", "order"),  # a 9-line block reordered; zero_grad runs no operation
    ("awac_missing_detach_advantage", "gradient"),   # no_grad -> enable_grad around the advantage weights
    ("iql_v_loss_online_q", "numeric"),              # the online Q module called where the target Q was
    ("iql_lr_schedule_not_stepped", "order"),        # a skipped LR-schedule step: the next step's lr differs
    ("extra_actor_grad_into_critic", "gradient"),    # the extra actors' freeze leaves the critic out
    ("actors_built_before_critics", "rng"),          # construction order: replayed construction, step 0
])
def test_mutant_is_located_at_the_mutated_line(embedded_dataset, name, kind):
    mutant = by_name(name)
    row = localise_mutant(mutant)
    truth = mutant.location()
    assert row["step"] is not None, f"{name} never diverged"
    assert row["kind"] == kind, row["message"]
    assert row["located"] is not None
    assert (row["located"]["path"], row["located"]["line"]) == (truth["path"], truth["line"]), row["message"]
    assert row["located"]["code"] == truth["original"]
    assert row["exact"]
    if name in MESSAGES:
        rule, text = MESSAGES[name]
        assert text in row["message"]
        assert rule is None or row["rule"] == rule, row["rule"]
    if name == "sac_n_actor_critic_order_swapped":
        assert row["located"]["function"].endswith("train_step")
    json.dumps(row)  # goes into a CheckResult's metrics as it is


@pytest.mark.heavy
def test_a_skipped_schedule_step_is_named_not_the_optimizer_step_that_uses_its_lr(embedded_dataset):
    found = localise_mutant(by_name("iql_lr_schedule_not_stepped"))  # optimizer probes see the lr after step 1
    assert found["rule"] == "schedule_step" and found["step"] == 1 and found["exact"]
    assert "candidate skips the reference's `lr_scheduler.step([1])`" in found["message"]


def test_an_incomplete_freeze_is_named_where_the_frozen_tensors_are_chosen(embedded_dataset):
    found = localise_mutant(by_name("extra_actor_grad_into_critic"))
    assert found["rule"] == "leak_past_freeze"
    assert "uses `critic/" in found["message"] and "the candidate freezes `actor0/" in found["message"]
    assert "the frozen tensors are chosen where `frozen` is called" in found["message"]


def test_the_ladder_is_one_ordered_tuple_of_named_rules():
    """The rule ids localisations carry are the ladder's function names, in the order the rules are tried."""
    from checks.localise import rules

    assert [r.__name__ for r in rules.LADDER] == ["random_draw", "graph_source", "extra_operations",
                                                  "missing_operations", "module_swap", "call_path", "grad_mode",
                                                  "other_operation", "module_input", "value"]


def _pair(algo: str, candidate=multi_actor_factory, overrides=()):
    cfg = build_config(None, list(overrides), algo=algo, num_actors=3, seed=0)
    algorithm = get_algorithm(algo)
    data = prepare_data(cfg, algorithm)
    buffer = ReplayBuffer(data.processed, 1)
    return (IsolatedTrainer(reference_factory, cfg, data.spec, 0), IsolatedTrainer(candidate, cfg, data.spec, 0),
            buffer)


def test_a_faithful_trainer_localises_to_none_and_nothing_is_disturbed(embedded_dataset):
    ref, cand, buffer = _pair("td3_bc")
    batch = buffer.sample(BATCH)
    before = copy.deepcopy(ref), copy.deepcopy(cand)
    found = localise_step(ref, cand, batch)
    assert found.kind == "none" and found.location is None, found.message
    for iso, untouched in zip((ref, cand), before):  # the originals were neither stepped nor reseeded
        assert iso.rng_digests() == untouched.rng_digests()
        for key, value in iso.call("parameters").items():
            np.testing.assert_array_equal(value, untouched.call("parameters")[key])
        assert iso.call("step", batch) == untouched.call("step", batch)


class _NumpyDrawingTrainer:
    """The reference plus one draw from the global numpy stream per step (a third-party style defect)."""

    def __init__(self, config, spec, seed):
        self.inner = reference_factory(config, spec, seed)

    def step(self, batch):
        out = self.inner.step(batch)
        out["noise"] = float(np.random.normal(size=3).sum())
        return out

    def parameters(self):
        return self.inner.parameters()

    def load_parameters(self, params):
        self.inner.load_parameters(params)


def test_a_global_numpy_draw_of_a_user_trainer_is_located(embedded_dataset):
    ref, cand, buffer = _pair("td3_bc", candidate=_NumpyDrawingTrainer)
    found = localise_step(ref, cand, buffer.sample(BATCH))
    lines, start = inspect.getsourcelines(_NumpyDrawingTrainer.step)
    line = start + next(i for i, text in enumerate(lines) if "np.random.normal" in text)
    assert found.kind == "rng"
    assert found.location["path"] == "tests/test_localise.py" and found.location["line"] == line
    assert "numpy.random.normal([3])" in found.message and "numpy global" in found.message


def test_a_defect_acting_later_is_localised_at_the_step_it_first_shows(embedded_dataset):
    row = localise_mutant(by_name("td3_bc_scaled_by_alpha"))  # the actor (and its loss) is first updated at step 2
    assert row["step"] == 2 and row["exact"], row


@pytest.mark.heavy
def test_accuracy_counts_exact_lines_and_leaves_oracle_mutants_out(embedded_dataset):
    mutants = [by_name("td3_target_without_min"), by_name("w2_std_term_dropped"), by_name("td3_bc_scaled_by_alpha")]
    report = localisation_accuracy(mutants)
    assert report["mutants"] == 3 and report["counted"] == 2
    assert report["exact"] == 2 and report["accuracy"] == 1.0
    oracle = next(r for r in report["rows"] if r["mutant"] == "w2_std_term_dropped")
    assert oracle["exact"] is False
    json.dumps(report)


def test_user_code_excludes_the_tool_and_the_libraries():
    assert not is_user_file(torch.__file__)
    assert not is_user_file(np.__file__)
    assert not is_user_file(inspect.__file__)
    assert not is_user_file(localise_step.__code__.co_filename)
    assert is_user_file(reference_factory.__code__.co_filename)
    assert is_user_file(__file__)


def _jax_mutant_localised(name: str):
    """The mutant's loop body traced against the original on one trainer's state: (localisation, unchanged one)."""
    pytest.importorskip("jax")
    from checks.equivalence.jax_audit import DictBatchSampler, prepare_rebrac_data
    from checks.localise.jax_trace import localise_jax_update, rebrac_loop_body_args

    mutant = by_name(name)
    original, _ = mutant.resolve()
    cfg = build_config(None, list(mutant.overrides), algo="rebrac", num_actors=3, seed=0)
    data, spec = prepare_rebrac_data(cfg)
    trainer = mutant.factory(cfg, spec, 0)
    wrap, args = rebrac_loop_body_args(trainer, DictBatchSampler(data, 1).sample(16))
    return (localise_jax_update(wrap(original), wrap(trainer.loop_body_fn), *args),
            localise_jax_update(wrap(original), wrap(original), *args))


@pytest.mark.heavy
@pytest.mark.parametrize("name, kind, line", [
    ("jax_extra_key_split", "rng", 326),           # an extra jax.random.split in the ReBRAC loop body
    ("jax_actor_target_post_step", "numeric", 287),  # the target soft-updated toward the post-step actor
    ("jax_bc_coefs_swapped", "numeric", 295),      # a coefficient passed at 295, used (as a literal) at 212
    ("jax_noise_args_swapped", "numeric", 243),    # two arguments passed in swapped order, used inside a helper
    ("jax_critic_target_online_actor", "numeric", 242),  # other parameters read inside the module applied at 242
    ("jax_actor_q_from_target_critic", "numeric", 272),  # ditto, inside the actor loss's critic application
])
def test_jax_mutant_is_located_by_its_traced_update(embedded_dataset, name, kind, line):
    found, unchanged = _jax_mutant_localised(name)
    truth = by_name(name).location()
    assert found.kind == kind, found.message
    assert (found.location["path"], found.location["line"]) == (truth["path"], truth["line"]), found.message
    assert (found.location["path"], found.location["line"]) == ("reference_algos/jax/rebrac.py", line)
    assert unchanged.kind == "none" and unchanged.location is None
    if name == "jax_bc_coefs_swapped":  # a literal of the `mul` at 212, followed back to where it is chosen
        assert found.rule == "jaxpr constant, traced value"
        assert "candidate sets `critic_kwargs['critic_bc_coef']` to 0.5 where the reference has 1.0" in found.message
        assert [(f["file"], f["line"]) for f in found.frames[:2]] == [("reference_algos/jax/rebrac.py", 295),
                                                                      ("reference_algos/jax/rebrac.py", 212)]
        assert found.reference_frames[0]["line"] == 295


@pytest.mark.heavy
def test_a_jax_flag_input_is_followed_to_the_line_that_hard_codes_it(embedded_dataset):
    """policy_freq ignored: the traced updates are identical, their full-update flag input is not (update 1: the
    candidate runs a full update, the reference critic-only); the line that passes 1 instead of ``cfg.policy_freq``
    is named. Our trainer from the same state localises to none."""
    pytest.importorskip("jax")
    from checks.equivalence.jax_audit import DictBatchSampler, prepare_rebrac_data
    from checks.localise.jax_trace import localise_jax_step
    from multi_actor.jax_trainer import rebrac_multi_actor_factory, rebrac_reference_factory

    mutant = by_name("jax_policy_freq_ignored")
    cfg = build_config(None, [], algo="rebrac", num_actors=3, seed=0)
    data, spec = prepare_rebrac_data(cfg)
    ref = rebrac_reference_factory(cfg, spec, 0)
    state = dict(ref.jax_state(), updates=1)
    batch = DictBatchSampler(data, 1).sample(16)
    found = localise_jax_step((ref, state, mutant.factory(cfg, spec, 0), state), batch)
    truth = mutant.location()
    assert found.kind == "order" and found.rule == "jaxpr input, traced value"
    assert (found.location["path"], found.location["line"]) == (truth["path"], truth["line"])
    assert truth["path"] == "multi_actor/jax_trainer.py" and truth["original"].startswith("schedule = ")
    assert "`full_update` differs from the reference's (1 vs the reference's 0)" in found.message
    assert "candidate passes `policy_freq` = 1, not its config's value" in found.message
    ours = localise_jax_step((ref, state, rebrac_multi_actor_factory(cfg, spec, 0), state), batch)
    assert ours.kind == "none" and ours.location is None


def test_jax_values_and_their_first_difference():
    from checks.localise.jax_trace import value_difference, value_digest

    assert value_digest({"a": 1.0, "b": (2, np.zeros(3, np.float32))}) == \
        value_digest({"a": 1.0, "b": (2, np.zeros(3, np.float32))})
    assert value_digest({"a": 1.0}) != value_digest({"a": 1.5})
    assert value_digest(lambda: 0) is None
    assert value_difference({"gamma": 0.99, "coef": (1.0, 2)}, {"gamma": 0.99, "coef": (1.0, 3)}) == \
        ("['coef'][1]", "2", "3")


def test_an_argument_contradicting_its_config_is_found():
    from checks.localise.frames import Frame
    from checks.localise.jax_trace import Assignment, passed_against_config, value_digest
    from reference_algos.jax.rebrac import Config

    here = Frame("x.py", 3, "f", "g(cfg.n, 1)")

    def passed(name, value):
        return Assignment(here, name, value_digest(value), value)

    cfg = Config()
    same = passed("delayed_updates(policy_freq)", cfg.policy_freq)
    other = passed("delayed_updates(policy_freq)", cfg.policy_freq + 1)
    assert passed_against_config([passed("flags(cfg)", cfg), same]) is None
    assert passed_against_config([passed("flags(cfg)", cfg), same, other]) is other
    assert passed_against_config([other, passed("flags(cfg)", cfg)]) is None  # no config seen before it


def test_jax_inputs_are_compared_by_value_not_by_static_fields():
    """Two TrainStates built with separate (equal) ``optax.adam`` closures have unequal tree definitions; as update
    inputs they are equal until a value differs, which is then named."""
    jax = pytest.importorskip("jax")
    import flax.linen as nn
    import optax
    from flax.training import train_state

    from checks.localise.jax_trace import differing_input

    module = nn.Dense(2)
    params = module.init(jax.random.PRNGKey(0), np.zeros((1, 3), np.float32))

    def state(p):
        return train_state.TrainState.create(apply_fn=module.apply, params=p, tx=optax.adam(1e-3))

    def update(key, actor):
        return actor

    a, b = state(params), state(params)
    assert jax.tree.structure(a) != jax.tree.structure(b)
    key = np.zeros(2, np.uint32)
    assert differing_input(update, (key, a), (key, b)) is None
    other = state(jax.tree.map(lambda x: x + 1, params))
    found = differing_input(update, (key, a), (key, other))
    assert found.kind == "numeric" and "`actor" in found.message and "params" in found.message


class _Counter:
    """A step with a delayed block, as TD3's policy delay (the tracer sees it as user code: tests/ is not the tool)."""

    def __init__(self) -> None:
        self.total_it = 0
        self.ran: list[str] = []

    def step(self) -> None:
        self.total_it += 1
        if self.total_it % 2 == 0:
            self.ran.append("block")
        self.ran.append("after")


def _line_of(obj: object, code: str) -> int:
    source, start = inspect.getsourcelines(obj)
    return start + next(i for i, text in enumerate(source) if text.strip() == code)


def test_a_jump_enters_the_block_its_condition_skips_and_an_assignment_sets_what_the_condition_reads():
    from checks.localise.frames import Assign, Jump, LineTracer, display_path

    file = display_path(inspect.getsourcefile(_Counter) or "")
    cond = _line_of(_Counter.step, "if self.total_it % 2 == 0:")

    counter = _Counter()
    with LineTracer(lambda: True, Jump(file, cond, 0, cond + 1)) as tracer:
        counter.step()  # total_it 1: the condition would skip the block
    assert tracer.edited and counter.ran == ["block", "after"]

    counter = _Counter()
    with LineTracer(lambda: True, Assign(file, cond, 0, (("total_it", 2),))) as tracer:
        counter.step()
    assert tracer.edited and counter.ran == ["block", "after"] and counter.total_it == 2

    counter = _Counter()
    with LineTracer(lambda: True, Jump(file, cond, 1, cond + 1)) as tracer:  # no second run of the line: no jump
        counter.step()
    assert not tracer.edited and counter.ran == ["after"]


def test_a_deep_copy_that_shares_tensors_through_a_closure_is_refused():
    """deepcopy keeps functions by reference: a trainer whose step is a closure over its tensors copies
    'successfully' but a replay on the copy would write into the audited run. Such a copy is refused (the run then
    snapshots by fork); a plain object's copy is accepted and owns its tensors."""
    import torch

    from checks.localise.fork import ReplayFailed, independent_copy

    weights = torch.zeros(3)

    def step() -> None:
        weights.add_(1.0)

    closure_trainer = types.SimpleNamespace(step=step, weights=weights)
    with pytest.raises(ReplayFailed, match="shares 1 tensor storage"):
        independent_copy(closure_trainer)
    plain = types.SimpleNamespace(weights=torch.zeros(3), empty=torch.zeros(0))
    copied = independent_copy(plain)
    assert copied.weights.data_ptr() != plain.weights.data_ptr()


def test_the_same_draw_written_another_way_is_no_difference_and_another_draw_is():
    """``randn_like`` where the reference allocates and fills with ``normal_`` moves the global stream the same way
    and gives the same numbers: nothing to locate; a draw of other numbers is still the first difference."""
    from checks.localise.align import first_difference
    from checks.localise.trace import recording

    def step(draw):
        torch.manual_seed(3)
        w = torch.ones(4, 3, requires_grad=True)
        x = draw(w)
        (x * w).sum().backward()
        return w.grad

    traces = []
    for draw in (lambda w: torch.empty(4, 3).normal_(), lambda w: torch.randn_like(w), lambda w: torch.rand_like(w)):
        with recording(None) as trace:
            step(draw)
        traces.append(trace)
    reference, same, other = traces
    assert first_difference(reference, same) is None
    assert first_difference(reference, other) is not None
