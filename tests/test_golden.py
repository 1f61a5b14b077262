"""The engine's trusted (golden) subset: carved out by seed, the same for every method of a cell, handed
only to methods that declare ``uses_clean_data``, recorded in result.json, scored extra selection sets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lnlbench.config import TrialConfig, resolve
from lnlbench.data import golden_split
from lnlbench.engine import build_trial, run_trial
from lnlbench.errors import LnlError
from lnlbench.runner.spec import expand, parse_spec

CELL = dict(dataset="digits", noise="symmetric", rate=0.5, seed=1, subset=16, epochs=1, preset="mini")


def _build(tmp_path, method: str, **kw):
    return build_trial(TrialConfig(method=method, out_dir=str(tmp_path / "runs"), **{**CELL, **kw}))


def test_golden_set_is_disjoint_identical_across_methods_and_only_in_declaring_contexts(tmp_path):
    tssd, ce, dm = (_build(tmp_path, m, golden_per_class=5) for m in ("tssd", "ce", "dividemix"))
    g = tssd.data.golden_idx
    assert len(g) == 5 * 10 and np.bincount(tssd.data.golden_y).tolist() == [5] * 10
    for t in (tssd, ce, dm):  # every method of the cell: the same golden set, the same noisy rest without it
        assert np.array_equal(t.data.golden_idx, g)
        assert np.array_equal(t.data.train_idx, tssd.data.train_idx)
        assert np.intersect1d(t.data.train_idx, g).size == 0
        assert len(t.ctx.train) == 16 * 10 - 50
    # the golden labels are the clean ones; only the declaring method's context holds them
    assert np.array_equal(tssd.data.golden_y, tssd.data.info.y_train[g])
    assert torch.equal(tssd.ctx.golden.y.cpu(), torch.from_numpy(tssd.data.golden_y))
    images = torch.from_numpy(tssd.data.info.x_train[g]).permute(0, 3, 1, 2)
    assert torch.equal(tssd.ctx.golden.x.cpu(), images)
    assert ce.ctx.golden is None and dm.ctx.golden is None
    assert ce.trial.golden_use == "withheld" and not ce.trial.uses_clean_data and tssd.trial.uses_clean_data
    # a different seed draws another set; the noisy labels of the samples both keep are the same noise file
    other = _build(tmp_path, "ce", golden_per_class=5, seed=2)
    assert not np.array_equal(other.data.golden_idx, g)


def test_without_a_golden_set_nothing_is_carved_and_ids_stay(tmp_path):
    plain = _build(tmp_path, "ce")
    assert len(plain.data.golden_idx) == 0 and len(plain.ctx.train) == 160 and plain.ctx.golden is None
    with_g = resolve(TrialConfig(method="ce", out_dir=str(tmp_path), golden_per_class=5, **CELL))
    assert with_g.trial_id != plain.trial.trial_id
    add = resolve(TrialConfig(method="ce", out_dir=str(tmp_path), golden_per_class=5, golden_add=True,
                              **CELL))
    assert len({add.trial_id, with_g.trial_id, plain.trial.trial_id}) == 3


def test_golden_add_trains_on_the_golden_set_with_clean_labels(tmp_path):
    add = _build(tmp_path, "ce", golden_per_class=5, golden_add=True)
    withheld = _build(tmp_path, "ce", golden_per_class=5)
    g = add.data.golden_idx
    assert np.array_equal(g, withheld.data.golden_idx) and add.ctx.golden is None
    assert len(add.ctx.train) == 160 and np.isin(g, add.data.train_idx).all()
    pos = np.searchsorted(add.data.train_idx, g)
    assert np.array_equal(add.data.noisy[pos], add.data.info.y_train[g]) and not add.data.is_noisy[pos].any()
    # the samples outside the golden set keep the noisy labels the withheld trial trains on
    rest = np.setdiff1d(np.arange(len(add.data.train_idx)), pos)
    assert np.array_equal(add.data.noisy[rest], withheld.data.noisy)
    assert add.trial.uses_clean_data and add.trial.golden_use == "add"


@pytest.mark.parametrize("kw, match", [
    (dict(method="ce", golden_per_class=16), "takes every one of the 16"),
    (dict(method="ce", golden_per_class=0), "positive integer"),
    (dict(method="ce", golden_add=True), "golden_add needs a golden set"),
    (dict(method="tssd", golden_per_class=5, golden_add=True), "drop golden_add"),
])
def test_golden_errors_are_one_line_at_resolve(tmp_path, kw, match):
    with pytest.raises(LnlError, match=match) as err:
        resolve(TrialConfig(out_dir=str(tmp_path), **{**CELL, **kw}))
    assert "\n" not in str(err.value)


def test_a_golden_method_without_a_size_uses_its_default_or_stops(tmp_path, monkeypatch):
    cls = __import__("lnlbench.registry", fromlist=["_"]).METHODS.get("tssd")
    outside = resolve(TrialConfig(method="tssd", out_dir=str(tmp_path), **{**CELL, "preset": "paper"}))
    assert outside.golden_per_class == cls.golden_default == 10 and outside.golden_use == "context"
    assert resolve(TrialConfig(method="tssd", out_dir=str(tmp_path), **CELL)).golden_per_class == 10  # recipe
    monkeypatch.setattr(cls, "golden_default", None)
    with pytest.raises(LnlError, match="--golden-per-class"):
        resolve(TrialConfig(method="tssd", out_dir=str(tmp_path), **{**CELL, "preset": "paper"}))


def test_golden_split_refuses_to_empty_a_class():
    clean = np.array([0, 0, 0, 1, 1, 1, 1])
    assert len(golden_split(clean, np.arange(7), 2, seed=0)) == 4
    with pytest.raises(LnlError, match="leaves no training image of class 0"):
        golden_split(clean, np.arange(7), 3, seed=0)


def test_golden_size_and_flags_reach_result_json(tmp_path):
    res = run_trial(TrialConfig(method="ce", out_dir=str(tmp_path / "r"), golden_per_class=4, golden_add=True,
                                **CELL))
    assert res["golden"] == {"per_class": 4, "use": "add", "n": 40}
    assert res["method_flags"]["uses_clean_data"] is True
    plain = run_trial(TrialConfig(method="ce", out_dir=str(tmp_path / "r"), golden_per_class=4, **CELL))
    assert plain["golden"]["use"] == "withheld" and plain["method_flags"]["uses_clean_data"] is False
    assert plain["data"]["n_train"] == 120
    tssd = run_trial(TrialConfig(method="tssd", out_dir=str(tmp_path / "r"), **CELL))  # its recipe's 10
    assert tssd["golden"] == {"per_class": 10, "use": "context", "n": 100} and tssd["data"]["n_train"] == 60
    assert tssd["method_flags"]["uses_clean_data"] is True and tssd["method_flags"]["reconstructed"] is True
    none = run_trial(TrialConfig(method="ce", out_dir=str(tmp_path / "r"), **CELL))
    assert none["golden"] is None and "--golden-add" in __import__(
        "lnlbench.aggregate.frame", fromlist=["_"]).trial_command(res["config"])


def test_the_engine_scores_a_methods_extra_selection_sets(tmp_path):
    trial = _build(tmp_path, "ce")
    clean = ~trial.data.is_noisy
    mask = torch.from_numpy(clean.copy())
    mask[: len(mask) // 2] = False  # half the clean samples: precision 1, recall about 1/2
    trial.method.selection_sets = lambda: {"half": mask}
    rec = trial.epoch_record(0, {}, 0.0)
    got = rec["selection_sets"]["half"]
    assert got["precision"] == 1.0
    assert got["recall"] == pytest.approx(mask.sum().item() / clean.sum())
    trial.method.selection_sets = lambda: {}
    assert "selection_sets" not in trial.epoch_record(0, {}, 0.0)


def test_a_grid_sets_the_golden_size_and_adds_fair_comparison_rows(tmp_path):
    raw = {"name": "g", "datasets": ["digits"], "methods": ["ce", "tssd"], "seeds": [0], "epochs": 1,
           "subset": 16, "noise": [{"name": "symmetric", "rates": [0.5]}], "storage": str(tmp_path / "run"),
           "trial": {"golden_per_class": 5}, "golden_add": ["ce"]}
    cells = expand(parse_spec(raw))
    assert sorted((c.config["method"], c.config["golden_add"]) for c in cells) == [
        ("ce", False), ("ce", True), ("tssd", False)]
    assert all(c.config["golden_per_class"] == 5 for c in cells)
    assert "ce +golden digits symmetric@0.5 s0" in {c.label for c in cells}
    with pytest.raises(LnlError, match="not among the grid's methods"):
        parse_spec({**raw, "golden_add": ["dividemix"]})
