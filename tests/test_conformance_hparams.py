"""Every hyperparameter a trace set records is applied to the reference, listed as not replayed, or refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from checks.conformance import run_variant
from checks.conformance.hyperparameters import NOT_REPLAYED, resolve
from multi_actor import registry
from pogo_audit.runtime.errors import InputError
from pogo_audit.core.golden import PRECISIONS, GoldenDir
from pogo_audit.runtime.io import load_npz


def _copied_set(tmp_path: Path, precision: str, variant: str, edit) -> GoldenDir:
    """A copy of a shipped set whose ``variant/meta.json`` went through ``edit(meta)``."""
    src = GoldenDir(precision=precision).root
    dst = tmp_path / f"{precision}-set"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("layout.json"))
    (dst / "layout.json").symlink_to(src / "layout.json")  # shared files are found relative to the real layout
    meta_path = dst / variant / "meta.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    return GoldenDir(dst)


def _resolve(gd: GoldenDir, variant: str):
    spec, var = registry.variants()[variant]
    dataset = load_npz(gd.dataset_path, "dataset")
    return resolve(gd.variant(variant), spec.reference, var.overrides, dataset["actions"].shape[1])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_shipped_hyperparameter_is_applied_or_listed(precision):
    """Each key of every shipped meta.json (train_config, trainer_kwargs, the JAX set's flat dict) is applied to the
    reference or listed as not replayed with its reason: nothing falls through."""
    gd = GoldenDir(precision=precision)
    for variant in registry.variants():
        resolved = _resolve(gd, variant)
        hp = gd.variant(variant).meta["hyperparameters"]
        sections = {"train_config.": hp["train_config"], "trainer_kwargs.": hp["trainer_kwargs"]} \
            if "train_config" in hp else {"": hp}
        for where, keys in sections.items():
            for key in keys:
                name = where + key
                assert name in resolved.applied or name in resolved.not_replayed or name in resolved.overruled, \
                    (variant, name)
                if name in resolved.not_replayed:
                    assert resolved.not_replayed[name] == NOT_REPLAYED[key].reason


def test_a_recorded_constructor_argument_builds_the_reference(tmp_path, monkeypatch):
    """AWAC's ``exp_adv_max`` is a constructor argument CORL's train() never passes: a set recorded with another
    value is replayed with it. With 0.5 the clamp binds at step 1, so the replay parts from the traces (recorded with
    100) at once — the value reaches the trainer; with the shipped 100 the same replay passes."""
    from reference_algos.torch import awac

    built = []
    real_build = awac.build

    def spy(config, *args, **kwargs):
        trainer = real_build(config, *args, **kwargs)
        built.append(trainer.exp_adv_max)
        return trainer

    monkeypatch.setattr(awac, "build", spy)
    gd = _copied_set(tmp_path, "float64", "awac",
                     lambda m: m["hyperparameters"]["trainer_kwargs"].update(exp_adv_max=0.5))
    res = run_variant(gd, "awac", steps=2)
    assert built == [0.5]
    assert res.verdict == "fail" and res.first_divergence.step == 1
    assert res.first_divergence.observable == "log/actor_loss"
    hp = res.metrics["hyperparameters"]
    assert hp["applied"]["trainer_kwargs.exp_adv_max"] == 0.5
    assert "exp_adv_max=0.5 (CORL default 100.0)" in hp["differs_from_corl_defaults"]

    assert run_variant(GoldenDir(precision="float64"), "awac", steps=2).verdict == "pass"
    assert built == [0.5, 100.0]


def test_an_unknown_trainer_kwarg_refuses_the_set_naming_it(tmp_path):
    gd = _copied_set(tmp_path, "float64", "td3_bc",
                     lambda m: m["hyperparameters"]["trainer_kwargs"].update(actor_grad_clip=1.0))
    with pytest.raises(InputError, match=r"variant td3_bc: hyperparameters\.trainer_kwargs\.actor_grad_clip=1\.0"):
        run_variant(gd, "td3_bc", steps=1)


def test_an_unknown_key_is_exit_2_with_one_line(tmp_path, capsys):
    from pogo_audit.cli.main import main

    gd = _copied_set(tmp_path, "float64", "iql_gaussian",
                     lambda m: m["hyperparameters"]["train_config"].update(value_clip=3.0))
    code = main(["conformance", "--algo", "iql_gaussian", "--golden", str(gd.root), "--steps", "1", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "iql_gaussian" in err[0] and "train_config.value_clip=3.0" in err[0]


def test_trainer_kwargs_win_over_train_config_and_say_so(tmp_path):
    gd = _copied_set(tmp_path, "float64", "td3_bc",
                     lambda m: m["hyperparameters"]["train_config"].update(discount=0.98))
    resolved = _resolve(gd, "td3_bc")
    assert resolved.config.discount == 0.99
    assert resolved.notes == ["train_config.discount=0.98 but trainer_kwargs.discount=0.99: the trainer ran with "
                              "trainer_kwargs, so that is replayed"]


def test_scaled_constructor_arguments_are_unscaled_by_max_action(tmp_path):
    """TD3+BC's train() passes ``policy_noise * max_action``: with max_action 2 the recorded 0.4 is config 0.2."""
    def edit(meta):
        meta["hyperparameters"]["trainer_kwargs"].update(max_action=2.0, policy_noise=0.4, noise_clip=1.0)

    resolved = _resolve(_copied_set(tmp_path, "float64", "td3_bc", edit), "td3_bc")
    assert (resolved.config.policy_noise, resolved.config.noise_clip, resolved.build) == \
        (0.2, 0.5, {"max_action": 2.0})
    assert resolved.notes == []


@pytest.mark.parametrize("variant, section, key, value, why", [
    ("cql", "train_config", "normalize_reward", True, "cannot honour any value but False"),
    ("cql", "train_config", "load_model", "ckpt.pt", "cannot honour any value but ''"),
    ("td3_bc", "train_config", "normalize", False, "dataset_arrays_used.observations is 'observations"),
    ("iql_gaussian", "train_config", "iql_deterministic", True, "runs with iql_deterministic=False"),
    ("awac", "trainer_kwargs", "max_action", 2.0, "not a constructor argument"),
])
def test_values_the_replay_cannot_honour_are_refused(tmp_path, variant, section, key, value, why):
    gd = _copied_set(tmp_path, "float64", variant, lambda m: m["hyperparameters"][section].update({key: value}))
    with pytest.raises(InputError, match=rf"{variant}: hyperparameters\.{section}\.{key}=.*{why}"):
        _resolve(gd, variant)


def test_the_jax_set_flat_dict_is_resolved_too(tmp_path):
    gd = _copied_set(tmp_path, "float64", "rebrac", lambda m: m["hyperparameters"].update(actor_bc_coef=0.5))
    resolved = _resolve(gd, "rebrac")
    assert resolved.config.actor_bc_coef == 0.5 and resolved.applied["actor_bc_coef"] == 0.5
    assert "actor_bc_coef=0.5 (CORL default 1.0)" in resolved.differs
    assert "name" not in " ".join(resolved.differs)  # a wandb label is not a hyperparameter
    gd = _copied_set(tmp_path / "b", "float64", "rebrac", lambda m: m["hyperparameters"].update(jit_epochs=True))
    with pytest.raises(InputError, match=r"rebrac: hyperparameters\.jit_epochs=True"):
        _resolve(gd, "rebrac")


def test_constructor_arguments_name_config_fields():
    """Every TRAINER_ARGS entry of every reference maps to a Config field (or the ``build`` argument)."""
    for spec in (s for s in registry.ALGORITHMS.values() if s.framework == "torch"):
        fields = {f.name for f in dataclasses.fields(spec.reference.Config)}
        for name, arg in spec.reference.TRAINER_ARGS.items():
            assert arg.field is None and name == "max_action" or arg.field in fields, (spec.name, name)
