"""``pogo-audit adapt``: the canonical-name mapping proposed from module structure.

Small torch modules stand in for the reference networks in each naming layout of the PyTorch references
(``net.net.*``, ``net.*``, ``network.*``, ``base_network.*``, ``_mlp.*``, ``trunk.*``/``mu``/``log_sigma``) and for
a user's networks under other names; the real references are matched against our own multi-actor trainer.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from checks.adapt import candidate_units, match_units, propose, python_tables, reference_units
from multi_actor import registry
from multi_actor.config import build_config
from multi_actor.trainer import multi_actor_factory
from pogo_audit.cli.main import main
from pogo_audit.runtime.data import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
S, A, H = 5, 2, 8
SPEC = DatasetSpec("x", "Hopper-v5", 11, 3, 1.0)


def mlp(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, H), nn.ReLU(), nn.Linear(H, o))


class Holder(nn.Module):
    """A module that registers the given children/parameters under the given names, in order."""

    def __init__(self, **parts):
        super().__init__()
        for name, part in parts.items():
            setattr(self, name, part)


# reference layouts: (own parameter names, builder) -- each builder draws its Linear layers in the same order as
# the user-side builder below, so both sides built from one seed have equal values
def ref_net_net():
    return Holder(net=Holder(net=mlp(S, A)), log_std=nn.Parameter(torch.zeros(A)))


def ref_net():
    return Holder(net=mlp(S, A))


def ref_network():
    return Holder(network=mlp(S + A, 1))


def ref_base_network():
    return Holder(base_network=mlp(S, 2 * A))


def ref_mlp():
    return Holder(_mlp=mlp(S, A), _log_std=nn.Parameter(torch.zeros(A)))


def ref_trunk():
    trunk = nn.Sequential(nn.Linear(S, H), nn.ReLU())
    return Holder(trunk=trunk, mu=nn.Linear(H, A), log_sigma=nn.Linear(H, A))


def user_same_draws(ref_builder):
    """The user's version: the same layers in the same order under other names (one flat Sequential, or separate
    heads), so the state_dict order of shapes is the reference's."""
    if ref_builder is ref_net_net:
        return Holder(layers=mlp(S, A), sigma=nn.Parameter(torch.zeros(A)))
    if ref_builder is ref_net:
        return Holder(body=mlp(S, A))
    if ref_builder is ref_network:
        return Holder(q=mlp(S + A, 1))
    if ref_builder is ref_base_network:
        return Holder(encoder=mlp(S, 2 * A))
    if ref_builder is ref_mlp:
        return Holder(layers=mlp(S, A), log_std=nn.Parameter(torch.zeros(A)))
    body = nn.Sequential(nn.Linear(S, H), nn.ReLU())
    return Holder(body=body, mean=nn.Linear(H, A), log_std_head=nn.Linear(H, A))


def canonical(prefix, module):
    return {f"{prefix}/{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()}


class UserTrainer:
    """A plain object holding networks as attributes (not an nn.Module), like a single-file trainer."""


@pytest.mark.parametrize("layout", [ref_net_net, ref_net, ref_network, ref_base_network, ref_mlp, ref_trunk],
                         ids=lambda f: f.__name__[4:])
def test_every_reference_layout_maps_onto_other_names_in_order(layout):
    torch.manual_seed(0)
    ref = layout()
    torch.manual_seed(0)
    user = UserTrainer()
    user.policy = user_same_draws(layout)
    matches, mapping, left = match_units(reference_units(canonical("actor0/actor", ref)), candidate_units(user))
    ref_keys = [f"actor0/actor/{k}" for k in ref.state_dict()]
    user_keys = [f"policy/{k}" for k in user.policy.state_dict()]
    assert mapping == dict(zip(user_keys, ref_keys, strict=True))
    assert [(m.reference, m.candidates, m.values_equal, m.tie) for m in matches] == \
        [("actor0/actor", ["policy"], True, "")]
    assert left == []


def twin_reference():
    return {**canonical("critic/critic_1", mlp(S + A, 1)), **canonical("critic/critic_2", mlp(S + A, 1))}


def test_twin_critics_with_other_values_keep_registration_order_and_say_so():
    torch.manual_seed(0)
    ref = twin_reference()
    torch.manual_seed(1)  # another init: values cannot decide
    user = UserTrainer()
    user.qa, user.qb = mlp(S + A, 1), mlp(S + A, 1)
    matches, mapping, _ = match_units(reference_units(ref), candidate_units(user))
    assert [(m.reference, m.candidates, m.values_equal, m.ambiguous) for m in matches] == \
        [("critic/critic_1", ["qa"], False, True), ("critic/critic_2", ["qb"], False, False)]
    assert matches[0].tie == "2 candidate modules have these shapes (qa, qb); chose qa by registration order"
    assert mapping["qb/2.bias"] == "critic/critic_2/2.bias"
    assert "AMBIGUOUS, check: 2 candidate modules" in python_tables(_proposal(matches, mapping))


def test_twin_critics_registered_in_another_order_are_told_apart_by_their_initial_values():
    torch.manual_seed(0)
    ref = twin_reference()
    torch.manual_seed(0)
    first, second = mlp(S + A, 1), mlp(S + A, 1)
    user = UserTrainer()
    user.q2, user.q1 = second, first  # registered second-first, built first-second
    matches, mapping, _ = match_units(reference_units(ref), candidate_units(user))
    assert [(m.reference, m.candidates, m.values_equal, m.ambiguous) for m in matches] == \
        [("critic/critic_1", ["q1"], True, False), ("critic/critic_2", ["q2"], True, False)]
    assert "by its initial values equal the reference's" in matches[0].tie


def test_target_copy_goes_to_the_target_role_by_name():
    torch.manual_seed(0)
    actor = mlp(S, A)
    ref = {**canonical("actor0/actor", actor), **canonical("target/actor_target", copy.deepcopy(actor))}
    torch.manual_seed(0)
    user = UserTrainer()
    user.pi_targ = mlp(S, A)  # registered first, equal values: only the name tells the roles apart
    user.pi = copy.deepcopy(user.pi_targ)
    matches, _, _ = match_units(reference_units(ref), candidate_units(user))
    assert [(m.reference, m.candidates) for m in matches] == [("actor0/actor", ["pi"]),
                                                               ("target/actor_target", ["pi_targ"])]
    assert "chose pi by its name fits the role" in matches[0].tie and matches[1].tie == ""


def test_a_twin_critic_module_matches_two_user_networks_in_order():
    """IQL's TwinQ (``qf/q1.net.*``, ``qf/q2.net.*``) against a user who keeps the two critics apart."""
    torch.manual_seed(0)
    twin = Holder(q1=Holder(net=mlp(S + A, 1)), q2=Holder(net=mlp(S + A, 1)))
    torch.manual_seed(0)
    user = UserTrainer()
    user.critic_a, user.value, user.critic_b = mlp(S + A, 1), mlp(S, 1), mlp(S + A, 1)
    matches, mapping, left = match_units(reference_units(canonical("critic/qf", twin)), candidate_units(user))
    assert [(m.reference, m.candidates, m.composite) for m in matches] == \
        [("critic/qf", ["critic_a", "critic_b"], True)]
    assert mapping["critic_a/0.weight"] == "critic/qf/q1.net.0.weight"
    assert mapping["critic_b/2.bias"] == "critic/qf/q2.net.2.bias"
    assert [u.name for u in left] == ["value", "value.0", "value.2"]


def test_bare_tensors_and_one_module_reached_twice():
    torch.manual_seed(0)
    ref = {**canonical("actor0/actor", mlp(S, A)), "critic/log_alpha": torch.zeros(1).numpy()}
    torch.manual_seed(0)
    user = UserTrainer()
    user.nets = {"pi": mlp(S, A)}
    user.alias = user.nets["pi"]  # the same tensors again: counted once
    user.log_alpha = torch.zeros(1, requires_grad=True)
    user.lr = 3e-4
    units = candidate_units(user)
    assert [u.name for u in units] == ["nets.pi", "nets.pi.0", "nets.pi.2", "log_alpha"]
    _, mapping, left = match_units(reference_units(ref), units)
    assert mapping["log_alpha"] == "critic/log_alpha" and mapping["nets.pi/2.bias"] == "actor0/actor/2.bias"
    assert left == []


def _proposal(matches, mapping):
    from checks.adapt import Proposal

    return Proposal("td3_bc", "m:f", matches, mapping, [], [], {}, ["critic/critic_loss"])


@pytest.mark.parametrize("algo", registry.names("torch"))
def test_our_multi_actor_trainer_maps_onto_every_reference(algo):
    """Our trainer holds the reference trainer as ``base``: every reference tensor maps to ``base.<module>`` with
    its own key, initial values equal, the extra actors found through ``policies()``, and the log keys matched by
    value; only actor0's start-of-step snapshot is left over."""
    cfg = build_config(None, [], algo=algo, num_actors=3)
    p = propose(algo, cfg, SPEC, "multi_actor.trainer:multi_actor_factory", multi_actor_factory)
    assert p.complete and p.notes == []
    assert {c.split("/")[0] for c in p.unmatched_candidate} == {"_snapshot0"}
    for cand, canon in p.mapping.items():
        path, _, key = cand.partition("/")
        role, module, *rest = canon.split("/", 2)
        assert path == f"base.{module}" and key == (rest[0] if rest else ""), (cand, canon)
    assert all(m.values_equal for m in p.modules)
    assert p.extra_actors == {"actors.0": "actor1", "actors.1": "actor2"}
    assert set(p.log_mapping.values()) == set(p.reference_log_keys)
    assert all(k == v for k, v in p.log_mapping.items())


@pytest.fixture
def _repo_root(monkeypatch):
    monkeypatch.chdir(REPO)


def test_cli_adapt_on_the_worked_example(_repo_root, tmp_path, capsys):
    out = tmp_path / "tables.py"
    assert main(["adapt", "--algo", "td3_bc", "--candidate", "examples.pogo_adapter:factory", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "every reference tensor of td3_bc has a candidate match (36 tensors)" in text
    assert "extra actor: user.chain.0 → actor1" in text
    tables: dict = {}
    exec(out.read_text(), tables)  # the written tables are valid Python
    assert tables["PARAMETERS"]["user.q2/layers.4.bias"] == "critic/critic_2/net.4.bias"
    assert tables["LOG_KEYS"] == {"critic/critic_loss": "critic/critic_loss", "actor0/loss": "actor0/loss"}
    assert tables["EXTRA_ACTORS"] == {"user.chain.0": "actor1", "user.chain.1": "actor2"}


def test_cli_adapt_exit_codes(_repo_root, tmp_path, monkeypatch, capsys):
    mod = tmp_path / "adapt_candidates.py"
    mod.write_text(
        "import torch\n"
        "from examples.user_pogo_td3bc import POGOTD3BC\n"
        "def no_critic_2(config, spec, seed):\n"
        "    t = POGOTD3BC(spec.state_dim, spec.action_dim, spec.max_action, seed=seed)\n"
        "    del t.q2, t.q2_targ\n"
        "    t.q_opt = None\n"
        "    return t\n"
        "def crashes(config, spec, seed):\n"
        "    return POGOTD3BC(spec.state_dim, spec.action_dim, spec.max_action, seed=seed, gamma=0.9)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["adapt", "--algo", "td3_bc", "--candidate", "adapt_candidates:no_critic_2"]) == 1
    out = capsys.readouterr().out
    # critic_2 and both twin targets have the same shapes: the one left without a partner is the last in order
    assert "12 reference tensor(s) have no candidate match" in out
    assert "reference tensor not matched: target/critic_2_target/net.4.bias" in out
    assert "the candidate has no step(batch): log keys were not matched" in out
    assert main(["adapt", "--algo", "td3_bc", "--candidate", "adapt_candidates:crashes"]) == 1
    out = capsys.readouterr().out
    assert "raised TypeError: POGOTD3BC.__init__() got an unexpected keyword argument 'gamma'" in out
    assert f"(at {mod}:9 in crashes:" in out.replace("\n", "")
    assert main(["adapt", "--algo", "td3_bc", "--candidate", "adapt_candidates:missing"]) == 2
    assert main(["adapt", "--algo", "rebrac", "--candidate", "adapt_candidates:crashes"]) == 2


# ------------------------------------------------------------------------------ report: a candidate per algorithm


@pytest.mark.parametrize("argv, message", [
    (["--candidate", "cql=nope"], "--candidate cql: expected MODULE:FACTORY"),
    (["--candidate", "td3_bc=examples.pogo_adapter:factory", "--candidate", "td3_bc=examples.pogo_adapter:factory"],
     "--candidate: td3_bc was given twice"),
    (["--candidate", "rebrac=examples.pogo_adapter:factory"], "expected ALGO=MOD:FACTORY with ALGO one of iql, "),
    (["--candidate", "examples.pogo_adapter:factory", "--candidate", "examples.pogo_adapter:broken_factory"],
     "a candidate for all algorithms was already given (examples.pogo_adapter:factory)"),
    (["--algo", "td3_bc,iql", "--candidate", "td3_bc=examples.pogo_adapter:factory"], "no candidate for iql"),
    (["--algo", "iql", "--candidate", "td3_bc=examples.pogo_adapter:factory"], "td3_bc is not among --algo iql"),
])
def test_report_candidate_usage_errors(_repo_root, tmp_path, capsys, argv, message):
    assert main(["report", *argv, "-o", str(tmp_path / "r.md")]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.heavy
def test_report_audits_each_algorithm_with_its_own_candidate(_repo_root, embedded_dataset, tmp_path):
    import json

    out = tmp_path / "r.json"
    assert main(["report", "--candidate", "td3_bc=examples.pogo_adapter:factory", "--candidate",
                 "iql=examples.broken_adapter:fixed_factory", "--steps", "2", "--format", "json", "-o", str(out)]) == 0
    every = json.loads(out.with_suffix(".results.json").read_text())["checks"]
    checks = [c for c in every if c["check"] == "equivalence"]
    assert {c["metrics"]["candidate"] for c in every} == {"examples.pogo_adapter:factory",
                                                          "examples.broken_adapter:fixed_factory"}
    assert [(c["subject"], c["metrics"]["candidate"]) for c in checks] == [
        ("td3_bc", "examples.pogo_adapter:factory"), ("iql", "examples.broken_adapter:fixed_factory")]
    assert checks[0]["verdict"] == "pass"
    assert json.loads(out.read_text())["target"] == \
        "external trainer td3_bc=examples.pogo_adapter:factory, iql=examples.broken_adapter:fixed_factory"
