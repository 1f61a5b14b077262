"""Recipes: a preset's hyperparameters and its trial protocol apart, coverage reporting, the pool cap."""
from __future__ import annotations

import dataclasses

import pytest

from lnlbench.config import TrialConfig, resolve
from lnlbench.engine import run_trial
from lnlbench.errors import LnlError
from lnlbench.hparams import (
    CIFAR_N_CE,
    DIGITS_MLP,
    MINI_CIFAR,
    Protocol,
    Recipe,
    check_presets,
    lookup_recipe,
)
from lnlbench.methods.ce import CE
from lnlbench.registry import METHODS

FAST = dict(method="ce", dataset="digits", noise="symmetric", rate=0.4, seed=0, epochs=1, subset=10,
            hparams={"model_kwargs": {"hidden": [16]}})


@pytest.mark.parametrize("method", METHODS.names())
def test_every_preset_entry_is_hyperparameters_and_protocol_apart(method):
    cls = METHODS.get(method)
    check_presets(method, cls.Hparams, cls.PRESETS)  # raises on a key that is neither
    protocol = {f.name for f in dataclasses.fields(Protocol)}
    assert not protocol & {f.name for f in dataclasses.fields(cls.Hparams)}, "a hyperparameter named like protocol"


def test_a_protocol_key_among_the_hyperparameters_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(CE, "PRESETS", {"mini": {"digits": {**DIGITS_MLP, "subset": 30}}})
    with pytest.raises(LnlError, match=r"ce preset 'mini' entry 'digits'.*'subset'.*Recipe\(protocol") as err:
        resolve(TrialConfig(**FAST))
    assert "\n" not in str(err.value)
    with pytest.raises(LnlError, match="are trial protocol"):
        Recipe({"augment": True})


def test_a_key_that_is_neither_is_a_one_line_error(monkeypatch):
    with pytest.raises(LnlError, match=r"unknown protocol key 'subsett' \(did you mean 'subset'\?\)") as err:
        Recipe({"lr": 0.1}, protocol={"subsett": 30})
    assert "\n" not in str(err.value)
    # an entry of another dataset is checked too: a typo is found before anything runs
    monkeypatch.setattr(CE, "PRESETS", {"mini": {"digits": DIGITS_MLP, "cifar10": {"lrr": 0.1}}})
    with pytest.raises(LnlError, match=r"entry 'cifar10'.*'lrr' \(did you mean 'lr'\?\)"):
        resolve(TrialConfig(**FAST))
    with pytest.raises(LnlError, match="train_pool"):
        Protocol.from_dict({"train_pool": "most"})


def test_protocol_and_hyperparameters_merge_separately():
    presets = {"mini": {"cifar10": MINI_CIFAR, "cifar10/asymmetric": Recipe({"lr": 0.01}, protocol=dict(subset=50))}}
    got = lookup_recipe(presets, "mini", "cifar10", "asymmetric", 0.4)
    assert got.protocol == Protocol(subset=50, test_subset=200, augment=False)
    assert got.hparams == {**MINI_CIFAR.hparams, "lr": 0.01} and got.status == "preset"
    assert MINI_CIFAR.with_hparams(lr=1.0).protocol is MINI_CIFAR.protocol
    assert CIFAR_N_CE["milestones"] == (60,) and DIGITS_MLP["model"] == "mlp"


def test_epochs_is_a_hyperparameter_and_the_flag_overrides_it():
    t = resolve(TrialConfig(method="ce", dataset="cifar10", noise="symmetric", rate=0.5, preset="mini"))
    assert t.hparams.epochs == MINI_CIFAR.hparams["epochs"] == 25
    e = resolve(TrialConfig(method="ce", dataset="cifar10", noise="symmetric", rate=0.5, preset="mini", epochs=3))
    h = resolve(TrialConfig(method="ce", dataset="cifar10", noise="symmetric", rate=0.5, preset="mini",
                            hparams={"epochs": 3}))
    assert e.hparams.epochs == 3 and e.trial_id == h.trial_id != t.trial_id


def test_coverage_follows_the_tables_keys():
    table = {"paper": {"cifar10": {"lr": 0.1}, "cifar10/symmetric@0.5": {"lr": 0.2}, "cifar10/cifar10n": {},
                       "cifar100": {"lr": 0.3}, "cifar100/asymmetric": {"lr": 0.4}}}
    hit = lookup_recipe(table, "paper", "cifar10", "symmetric", 0.5)
    assert (hit.status, hit.missing, hit.applied, hit.hparams) == \
        ("preset", None, ("cifar10", "cifar10/symmetric@0.5"), {"lr": 0.2})
    miss = lookup_recipe(table, "paper", "cifar10", "symmetric", 0.4)  # a per-rate table without this rate
    assert (miss.status, miss.missing, miss.hparams) == ("default", "cifar10/symmetric@0.4", {"lr": 0.1})
    assert lookup_recipe(table, "paper", "cifar10", "cifar10n", None).status == "preset"  # real noise: by name
    assert lookup_recipe(table, "paper", "cifar100", "instance", 0.4).status == "preset"  # no rate entries
    none = lookup_recipe(table, "paper", "tiny_imagenet", "symmetric", 0.5)
    assert (none.missing, none.applied) == ("tiny_imagenet", ())


def test_a_default_recipe_is_in_the_result_and_on_stderr(tmp_path, capsys):
    # CE's paper preset has no digits entry: the cell runs on the dataclass defaults and says so
    res = run_trial(TrialConfig(**{**FAST, "preset": "paper", "hparams": {"model": "mlp", **FAST["hparams"]}},
                                out_dir=str(tmp_path)))
    assert res["status"] == "ok", res["error"]
    assert res["recipe"] == {"status": "default", "missing": "digits", "preset": "paper", "applied": []}
    err = [line for line in capsys.readouterr().err.splitlines() if "recipe" in line]
    assert len(err) == 1 and "ce's 'paper' recipe has no entry for digits" in err[0]
    res = run_trial(TrialConfig(**FAST, out_dir=str(tmp_path)))
    assert res["recipe"] == {"status": "preset", "missing": None, "preset": "mini", "applied": ["digits"]}
    assert "recipe" not in capsys.readouterr().err


@pytest.mark.parametrize("method,need", [("elr_plus", "192000"), ("ce", "all")])
def test_a_recipe_needing_more_than_the_pool_names_the_cap(method, need):
    cfg = dict(method=method, dataset="clothing1m", noise="given")
    with pytest.raises(LnlError, match=f"capped at 64,000 by the data option max_train; pass --data-opt "
                                       f"max_train={need}") as err:
        resolve(TrialConfig(**cfg, data_options={"max_train": 64000}))  # the fixed-subset mode
    assert "\n" not in str(err.value)
    assert resolve(TrialConfig(**cfg)).data_options["max_train"] == "all"  # the default: in full, streamed
    assert resolve(TrialConfig(**cfg, data_options={"max_train": 64000}, subset=100)).subset == 100  # the user's
    if method == "elr_plus":
        t = resolve(TrialConfig(**cfg, data_options={"max_train": 192000}))
        assert t.subset == 13714 and t.data_options == {"image_size": 224, "max_train": 192000}
        with pytest.raises(LnlError, match="max_train=192000"):
            resolve(TrialConfig(**cfg, data_options={"max_train": 191999}))
    assert resolve(TrialConfig(method="dividemix", dataset="clothing1m", noise="given")).subset is None


@pytest.mark.parametrize("cell,trial_id", [
    (dict(method="ce", preset="mini", dataset="digits", noise="symmetric", rate=0.5),
     "ce_digits_symmetric_0.5_s1_4c6f07f3"),
    (dict(method="dividemix", preset="mini", dataset="cifar10", noise="asymmetric", rate=0.4),
     "dividemix_cifar10_asymmetric_0.4_s1_ee4c3bbd"),
    (dict(method="elr_plus", preset="paper", dataset="cifar100", noise="symmetric", rate=0.8),
     "elr_plus_cifar100_symmetric_0.8_s1_6b6c6a0a"),
    (dict(method="sce", preset="paper", dataset="cifar10", noise="cifar10n:worst", rate=None),
     "sce_cifar10_cifar10n-worst_na_s1_913eef0f"),
    # GCE's id changed once since: prune_batch_size left its hyperparameters (the pruning pass takes the
    # device's evaluation batch; its passes augment, so another batch draws other crops: new results)
    (dict(method="gce", preset="mini", dataset="digits", noise="pairflip", rate=0.4, augment=False),
     "gce_digits_pairflip_0.4_s1_db8f0ff7"),
])
def test_trial_ids_of_unchanged_trials_are_kept(cell, trial_id):
    """Ids computed before recipes were split (the resolved trials are the same): old runs stay valid."""
    assert resolve(TrialConfig(**cell, seed=1)).trial_id == trial_id
