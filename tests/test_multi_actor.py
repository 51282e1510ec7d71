"""Multi-actor trainer: critic and actor0 stay bitwise equal to the reference; extra actors change nothing upstream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multi_actor.config import ActorConfig, MultiActorConfig
from multi_actor.trainer import multi_actor_factory, reference_factory
from pogo_audit.runtime.data import DatasetSpec, ReplayBuffer
from pogo_audit.core.harness import IsolatedTrainer

ALGOS = ("iql", "td3_bc", "cql", "awac", "sac_n", "edac")
SPEC = DatasetSpec("synthetic", "Hopper-v5", 11, 3, 1.0)


@pytest.fixture(scope="module")
def buffer_data():
    rng = np.random.default_rng(0)
    n = 2000
    return {"observations": rng.normal(size=(n, 11)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32),
            "next_observations": rng.normal(size=(n, 11)).astype(np.float32),
            "terminals": rng.random(n) < 0.05}


def lockstep(cfg, buffer_data, steps, batch_size=64):
    """Run reference and multi-actor side by side; return per-step (ref, cand) logs and final parameters."""
    torch.set_num_threads(1)
    ref = IsolatedTrainer(reference_factory, cfg, SPEC, cfg.seed)
    cand = IsolatedTrainer(multi_actor_factory, cfg, SPEC, cfg.seed)
    buf = ReplayBuffer(buffer_data, 123)
    logs = []
    for _ in range(steps):
        batch = buf.sample(batch_size)
        logs.append((ref.call("step", batch), cand.call("step", batch), ref.rng_digests(), cand.rng_digests()))
    return logs, ref, cand


def assert_upstream_bitwise(logs, ref, cand):
    for t, (lr, lc, dr, dc) in enumerate(logs, start=1):
        assert set(lr) <= set(lc), t
        for k, v in lr.items():
            assert lc[k] == v or (np.isnan(v) and np.isnan(lc[k])), (t, k, v, lc[k])
        assert dr == dc, (t, dr, dc)
    pr, pc = ref.trainer.parameters(), cand.trainer.parameters()
    for k, v in pr.items():
        assert np.array_equal(v, pc[k]), k
    gr, gc = ref.trainer.gradients(), cand.trainer.gradients()
    for k, v in gr.items():
        assert np.array_equal(v, gc[k]), f"gradient leak into {k}"


@pytest.mark.parametrize("algo,actors,steps", [("iql", 1, 100), ("iql", 3, 100), ("td3_bc", 1, 100),
                                                ("td3_bc", 3, 100), ("awac", 3, 30), ("cql", 3, 8),
                                                ("sac_n", 3, 8), ("edac", 3, 6)])
def test_critic_and_actor0_bitwise_equal_to_reference(buffer_data, algo, actors, steps):
    cfg = MultiActorConfig(algo=algo, num_actors=actors, seed=3).resolved()
    logs, ref, cand = lockstep(cfg, buffer_data, steps)
    assert_upstream_bitwise(logs, ref, cand)
    if actors > 1:
        assert any("actor2/w2" in lc for _, lc, _, _ in logs)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("actors", [1, 3])
def test_critic_and_actor0_bitwise_equal_100_steps(buffer_data, algo, actors):
    cfg = MultiActorConfig(algo=algo, num_actors=actors, seed=5).resolved()
    logs, ref, cand = lockstep(cfg, buffer_data, 100)
    assert_upstream_bitwise(logs, ref, cand)


@pytest.mark.parametrize("types", [("gaussian", "implicit", "tanh_gaussian"), ("gaussian", "deterministic",
                                                                                "gaussian")])
def test_every_actor_type_leaves_upstream_untouched(buffer_data, types):
    cfg = MultiActorConfig(algo="iql", num_actors=3, seed=1,
                           actor_configs=[ActorConfig(t) for t in types]).resolved()
    logs, ref, cand = lockstep(cfg, buffer_data, 10)
    assert_upstream_bitwise(logs, ref, cand)


def test_extra_actors_learn(buffer_data):
    cfg = MultiActorConfig(algo="td3_bc", num_actors=3, seed=2).resolved()
    cand = IsolatedTrainer(multi_actor_factory, cfg, SPEC, cfg.seed)
    before = {k: v.copy() for k, v in cand.trainer.parameters().items() if k.startswith("actor2/")}
    buf = ReplayBuffer(buffer_data, 0)
    for _ in range(4):
        cand.call("step", buf.sample(32))
    after = cand.trainer.parameters()
    assert any(not np.array_equal(v, after[k]) for k, v in before.items())


def test_candidate_detects_an_extra_global_draw(buffer_data, monkeypatch):
    """Sanity of the lockstep check itself: one extra global draw by actor 1 breaks rng/torch at step 1."""
    import multi_actor.trainer as tr

    original = tr.MultiActorTrainer._update_actors

    def noisy(self, batch, *args):
        torch.randn(1)
        return original(self, batch, *args)

    monkeypatch.setattr(tr.MultiActorTrainer, "_update_actors", noisy)
    cfg = MultiActorConfig(algo="iql", num_actors=2, seed=0).resolved()
    logs, _, _ = lockstep(cfg, buffer_data, 1)
    _, _, dr, dc = logs[0]
    assert dr["rng/torch"] != dc["rng/torch"]


# ---------------------------------------------------------------------------------- extra actors without rework


def _train_three(algo, buffer_data, steps=2):
    cfg = MultiActorConfig(algo=algo, num_actors=3, seed=4).resolved()
    torch.set_num_threads(1)
    trainer = multi_actor_factory(cfg, SPEC, cfg.seed)
    buf = ReplayBuffer(buffer_data, 7)
    return trainer, [buf.sample(64) for _ in range(steps)]


@pytest.mark.parametrize("algo", ["iql", "td3_bc"])
def test_each_extra_actor_network_runs_once_per_update(buffer_data, algo):
    """Energy and W2 share actor i's forward, the W2 reference of actor i+1 reuses it and actor0's snapshot takes
    the output of the base step's own actor forward: per update, every extra actor's network runs once, no snapshot
    runs at all, and the base networks run only as often as in the reference step plus what the energies need
    on the extra actors' actions."""
    trainer, batches = _train_three(algo, buffer_data)
    calls = {}
    base = {"iql": ("q_target", "vf"), "td3_bc": ("critic_1",)}[algo]
    for name, module in [*((f"actor{i}", a.net) for i, a in enumerate(trainer.actors, 1)),
                         ("snapshot0", trainer._snapshot0.net),
                         *((name, getattr(trainer.base, name)) for name in base)]:
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    reference, _ = _train_three(algo, buffer_data)
    ref_calls = {}
    for name in base:
        getattr(reference.base, name).register_forward_hook(
            lambda *_, name=name: ref_calls.__setitem__(name, ref_calls.get(name, 0) + 1))
    updates = 0
    for batch in batches:
        updates += "actor1/loss" in trainer.step(batch)
        reference.base.train_step(batch)
    assert updates >= 1
    # IQL: the advantage is the base step's own (no extra Q_target/V forward); TD3+BC: one critic_1 per extra actor
    extra = {"iql": {}, "td3_bc": {"critic_1": 2 * updates}}[algo]
    assert calls == {"actor1": updates, "actor2": updates,
                     **{name: ref_calls[name] + extra.get(name, 0) for name in base}}


@pytest.mark.parametrize("algo", ["iql", "td3_bc"])
def test_logged_losses_equal_a_fresh_evaluation_from_pre_step_copies(buffer_data, algo):
    """Memoized outputs and shared base quantities change no value: each actor's energy, W2 and loss, evaluated
    afresh from copies of the actors taken before the step (the default IQL/TD3+BC chains draw no noise), equal
    the logged ones exactly."""
    import copy

    from multi_actor.w2 import policy_w2

    trainer, batches = _train_three(algo, buffer_data, steps=1 if algo == "iql" else 2)
    cfg = trainer.config
    for batch in batches:
        pre = [copy.deepcopy(p) for p in trainer.policies()]
        pre_base = copy.deepcopy(trainer.base)
        log = trainer.step(batch)
    obs, actions = batch[0], batch[1]
    # IQL weighs by the advantage actor0's update used (the critic at the start of the step); TD3+BC's energy uses
    # the critic the base step left (its actor update runs after the critic update, as actor0's does)
    base = pre_base if algo == "iql" else trainer.base
    with torch.no_grad():
        for i in (1, 2):
            energy = trainer.algorithm.energy("base", base, pre[i], obs, actions, trainer.generator, {})
            w2 = policy_w2(pre[i], pre[i - 1], obs, cfg.w2_method, cfg.w2_samples, cfg.sinkhorn_epsilon,
                           trainer.generator)
            assert (log[f"actor{i}/energy"], log[f"actor{i}/w2"]) == (energy.item(), w2.item()), i
            assert log[f"actor{i}/loss"] == (energy + cfg.w2_weights[i - 1] * w2).item(), i


def test_a_memo_never_serves_a_stale_or_graphless_output():
    from multi_actor.policies import build_policy, param_versions

    torch.manual_seed(0)
    policy, obs = build_policy("gaussian", 11, 3, 1.0), torch.randn(8, 11)
    policy.remember(obs)
    with torch.no_grad():
        first = policy.mean_std(obs)[0]
    assert first.grad_fn is None
    again = policy.mean_std(obs)[0]
    assert again.grad_fn is not None and torch.equal(again, first)
    assert policy._net(obs) is policy._net(obs)  # computed once while nothing changes
    assert policy.mean_std(obs)[0] is again and again.grad_fn is not None  # so is what is derived from it
    snapshot = build_policy("gaussian", 11, 3, 1.0).requires_grad_(False)
    snapshot.copy_from(policy)
    snapshot.adopt_output(obs, policy._net(obs).detach(), param_versions(policy))
    assert torch.equal(snapshot.mean_std(obs)[0], again) and snapshot._memo.output.grad_fn is None
    with torch.no_grad():
        policy.net[0].bias.add_(1.0)
    changed = policy.mean_std(obs)[0]
    assert not torch.equal(changed, again) and torch.equal(changed, policy.net(obs).split(3, -1)[0].tanh())
    assert policy.mean_std(obs)[0] is changed
    late = build_policy("gaussian", 11, 3, 1.0).requires_grad_(False)
    late.copy_from(policy)
    with torch.no_grad():
        policy.net[0].bias.add_(1.0)
    late.adopt_output(obs, policy._net(obs).detach(), param_versions(policy))  # not the copied parameters' output
    assert late._memo is None
    served = policy._net(obs)
    obs.mul_(2.0)  # the armed input changed in place: a fresh forward, not the memo
    assert not torch.equal(policy._net(obs), served) and torch.equal(policy._net(obs), policy.net(obs))
    policy.forget()
    assert policy._memo is None


def test_start_output_keeps_only_the_armed_start_of_step_forward():
    """The hook keeps a forward only on the armed tensors themselves, unchanged in place, at the parameters of the
    arming time, and only when exactly one such forward ran; it records by reference and runs no operation (what
    the equivalence audit records of the base step stays the same)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from multi_actor.policies import StartOutput, build_policy

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    def ops_of(fn):
        with Ops() as mode:
            fn()
        return mode.n

    torch.manual_seed(0)
    net = build_policy("deterministic", 11, 3, 1.0).net
    obs = torch.randn(8, 11)
    plain = ops_of(lambda: net(obs))
    hook = StartOutput()
    net.register_forward_hook(hook)
    hook.arm(net, obs)
    net(obs.clone())  # another tensor with the same values: not the armed input
    assert ops_of(lambda: net(obs)) == plain
    kept = hook._outputs[-1]
    with torch.no_grad():
        net[0].bias.add_(1.0)
    net(obs)  # parameters changed since arming: not the start-of-step output
    out, versions = hook.take()
    assert out is kept and versions != tuple(p._version for p in net.parameters())
    assert hook.take()[0] is None  # disarmed
    hook.arm(net, obs)
    net(obs), net(obs)
    assert hook.take()[0] is None  # two forwards: ambiguous
    hook.arm(net, obs)
    obs.mul_(2.0)
    net(obs)
    assert hook.take()[0] is None  # the input changed in place after arming


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")  # IQL's scheduler, copied
def test_a_deep_copied_trainer_records_into_its_own_hooks(buffer_data):
    """The localiser and the isolation replay deep-copy the candidate: the copy's hooks must feed the copy."""
    import copy

    trainer, batches = _train_three("iql", buffer_data, steps=1)
    twin = copy.deepcopy(trainer)
    hooks = {name: h for name, (_, _, h) in twin._start_outputs.items()}
    assert set(hooks) == {"q_target", "vf", "actor0"}
    assert all(h is not trainer._start_outputs[n][2] for n, h in hooks.items())
    assert twin.base.vf._forward_hooks and hooks["vf"] in twin.base.vf._forward_hooks.values()
    log_a, log_b = trainer.step(batches[0]), twin.step(batches[0])
    assert log_a == log_b
