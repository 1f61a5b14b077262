"""``lnlbench tune`` without a Ray cluster: search spaces, search units and budgets, the noise-blind report
of a search trial (poisoned test labels change nothing), and the tuned recipe file's round trip."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import lnlbench.methods  # noqa: F401  (registers the methods)
from lnlbench.config import TrialConfig, resolve
from lnlbench.data import load_dataset
from lnlbench.errors import LnlError
from lnlbench.recipes import read_recipe, recipe_path, write_entry
from lnlbench.registry import METHODS
from lnlbench.runner.spec import parse_spec
from lnlbench.runner.tune_spec import REPORTED, objective_metrics, settings, space_for, units
from lnlbench.search import SGD_SPACE, check_dimension, check_space, contains, space_of


def grid(tmp_path, **over) -> dict:
    raw = {"name": "tt", "datasets": ["digits"], "methods": ["ce", "gce"],
           "noise": [{"name": "symmetric", "rates": [0.2, 0.5]}], "seeds": [0], "epochs": 2, "subset": 10,
           "storage": str(tmp_path / "run"), "recipes": str(tmp_path / "recipes"),
           "tune": {"budget": 2, "grace_period": 1}}
    return {**raw, **over}


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_a_valid_search_space(name):
    cls = METHODS.get(name)
    assert cls.SEARCH_SPACE, f"{name} has no SEARCH_SPACE"
    check_space(name, cls.Hparams, cls.SEARCH_SPACE)


def test_the_papers_grids_are_the_spaces():
    car, dm = METHODS.get("car").SEARCH_SPACE, METHODS.get("dividemix").SEARCH_SPACE
    assert car["lam"] == ("choice", [0.5, 10.0, 50.0]) and car["es"] == ("choice", [20, 60, 100])
    assert set(dm["lambda_u"][1]) == {0.0, 25.0, 150.0} and set(dm["p_threshold"][1]) == {0.5, 0.6}
    assert METHODS.get("ce").SEARCH_SPACE == SGD_SPACE


def test_a_malformed_dimension_is_a_one_line_error():
    for bad in [("normal", 0, 1), ("loguniform", 0, 1), ("uniform", 2, 1), ("choice", []), ("randint", 0.5, 3)]:
        with pytest.raises(LnlError):
            check_dimension("x", bad)
    with pytest.raises(LnlError, match="lrr"):
        check_space("ce", METHODS.get("ce").Hparams, {"lrr": ("uniform", 0.1, 1.0)})
    assert contains(("randint", 1, 3), 3) and not contains(("choice", [1, 2]), 3)


def test_a_hyperparameter_the_grid_fixes_is_not_searched():
    assert "lr" not in space_of(METHODS.get("ce"), {"lr": 0.01})


def test_scope_cell_searches_each_setting_and_scope_dataset_each_method_and_dataset(tmp_path):
    spec = parse_spec(grid(tmp_path))
    tune = settings(spec)
    cell = units(spec, tune, str(tmp_path / "t"))
    assert [(u.method, u.key) for u in cell] == [("ce", "digits/symmetric@0.2"), ("ce", "digits/symmetric@0.5"),
                                                  ("gce", "digits/symmetric@0.2"), ("gce", "digits/symmetric@0.5")]
    spec = parse_spec(grid(tmp_path, scope="dataset"))
    per_dataset = units(spec, settings(spec), str(tmp_path / "t"))
    assert [(u.method, u.key, len(u.cells)) for u in per_dataset] == [("ce", "digits", 2), ("gce", "digits", 2)]
    assert per_dataset[0].settings() == [{"noise": "symmetric", "rate": 0.2}, {"noise": "symmetric", "rate": 0.5}]
    # the search trains on a noisy validation split held out of the noisy training set
    assert all(c.config["val_fraction"] == 0.1 for u in per_dataset for c in u.cells)


def test_the_budget_is_one_number_for_every_method_and_the_cli_overrides_it(tmp_path):
    spec = parse_spec(grid(tmp_path))
    assert settings(spec).budget == 2 and settings(spec, budget=7, budget_hours=0.5).budget == 7
    assert settings(spec, budget_hours=0.5).budget_hours == 0.5
    with pytest.raises(LnlError, match="tune: unknown"):
        parse_spec(grid(tmp_path, tune={"budgett": 3}))
    with pytest.raises(LnlError, match="scope"):
        parse_spec(grid(tmp_path, scope="rate"))
    with pytest.raises(LnlError, match="val_fraction"):
        settings(parse_spec(grid(tmp_path, tune={"val_fraction": 0.6})))


def test_the_report_holds_only_noisy_validation_figures():
    rep = objective_metrics(3, [0.5, 0.7], [1.0, None], "u")
    assert set(rep) <= set(REPORTED) and rep["objective"] == pytest.approx(0.6) and rep["epoch"] == 4
    assert not any("test" in k or "clean" in k for k in REPORTED)
    with pytest.raises(LnlError, match="val_fraction"):
        objective_metrics(0, [None], [None], "u")


def poisoned(name, data_root=None, data_file=None, download=False, options=None):
    """The dataset with every test label wrong: the search must not notice."""
    info = load_dataset(name, data_root, data_file, download, options)
    return dataclasses.replace(info, y_test=(info.y_test + 1) % info.num_classes)


def test_a_search_trial_reports_the_same_with_poisoned_test_labels(tmp_path, monkeypatch):
    from lnlbench.runner import tune_trial

    spec = parse_spec(grid(tmp_path, methods=["ce"], scope="dataset"))
    hp = {"lr": 0.05, "weight_decay": 1e-4}
    runs = {}
    for name, load in (("clean", None), ("poisoned", poisoned)):
        (unit,) = units(spec, settings(spec), str(tmp_path / name))
        reports: list[dict] = []
        monkeypatch.setattr(tune_trial.ray.tune, "report", reports.append)
        monkeypatch.setattr(tune_trial, "shared_loader", lambda refs, load=load: load or load_dataset)
        tune_trial.search_trial({"unit": unit.uid, "hp": hp}, {unit.uid: unit})
        tests = [json.loads((tmp_path / name / c.trial_id / "result.json").read_text())
                 for c in [dataclasses.replace(c, trial_id=resolve(TrialConfig.from_dict(
                     {**c.config, "hparams": hp})).trial_id) for c in unit.cells]]
        runs[name] = reports, [r["history"][-1]["test_acc"] for r in tests]
    assert len(runs["clean"][0]) == 2 and all(set(r) <= set(REPORTED) for r in runs["clean"][0])
    assert runs["clean"][0] == runs["poisoned"][0]  # objective, every val acc, losses: identical
    assert runs["clean"][1] != runs["poisoned"][1]  # while the test accuracy did change


def write_ce(tmp_path, key="digits/symmetric@0.5", scope="cell", **hp):
    entry = {"hparams": {"lr": 0.031, "weight_decay": 2e-4, **hp}, "search": {"objective": 0.8}}
    search = {"objective": 0.8, "budget": {"trials": 12, "hours": None}, "trials_run": 12, "seeds": [0],
              "space": {"lr": ["loguniform", 0.002, 0.2]}}
    return write_entry(tmp_path / "recipes", "ce", "digits", scope, "mini", key, entry, search)


def test_a_recipe_file_round_trips_into_preset_tuned(tmp_path):
    path = write_ce(tmp_path)
    assert path == recipe_path(tmp_path / "recipes", "digits", "ce") and read_recipe(path)["base_preset"] == "mini"
    cfg = TrialConfig(method="ce", dataset="digits", rate=0.5, preset="tuned", recipes=str(tmp_path / "recipes"))
    t = resolve(cfg)
    assert t.hparams.lr == 0.031 and t.hparams.weight_decay == 2e-4 and t.hparams.model == "mlp"  # mini's
    assert t.preset == "tuned" and t.recipe["tuned"]["budget"] == {"trials": 12, "hours": None}
    assert t.trial_id != resolve(dataclasses.replace(cfg, preset="mini")).trial_id
    write_ce(tmp_path, key="digits/symmetric@0.2", lr=0.01)  # a second entry keeps the first
    assert set(read_recipe(path)["table"]) == {"digits/symmetric@0.2", "digits/symmetric@0.5"}
    with pytest.raises(LnlError, match="lnlbench tune"):
        resolve(dataclasses.replace(cfg, rate=0.4))
    with pytest.raises(LnlError, match="lnlbench tune"):
        resolve(dataclasses.replace(cfg, method="gce"))


def test_a_dataset_scope_recipe_covers_every_setting_of_the_dataset(tmp_path):
    write_ce(tmp_path, key="digits", scope="dataset")
    for rate in (0.2, 0.4):
        cfg = TrialConfig(method="ce", rate=rate, preset="tuned", recipes=str(tmp_path / "recipes"))
        assert resolve(cfg).hparams.lr == 0.031
    assert np.isclose(read_recipe(recipe_path(tmp_path / "recipes", "digits", "ce"))["searches"]["digits"]
                      ["objective"], 0.8)


def test_space_for_validates_against_the_method(tmp_path):
    spec = parse_spec(grid(tmp_path, overrides={"gce": {"q": 0.7}}))
    unit = units(spec, settings(spec), str(tmp_path / "t"))[2]
    assert unit.method == "gce" and "q" not in space_for(unit, spec) and "k" in space_for(unit, spec)


def test_a_table_shows_tuned_rows_apart_with_their_budget_and_the_selected_metric(tmp_path):
    from lnlbench.aggregate.cli import board_text
    from lnlbench.aggregate.frame import load_runs
    from lnlbench.engine import run_trial

    write_ce(tmp_path)
    for preset in ("mini", "tuned"):
        for seed in (1, 2):
            res = run_trial(TrialConfig(method="ce", rate=0.5, seed=seed, preset=preset, epochs=2, subset=10,
                                        val_fraction=0.1, recipes=str(tmp_path / "recipes"),
                                        out_dir=str(tmp_path / "final")))
            assert res["status"] == "ok", res["error"]
    text = board_text(load_runs([str(tmp_path / "final")]))
    assert "CE [preset=mini]" in text and "CE [preset=tuned]" in text and "lr=" not in text
    assert "budget 12 trials per search (scope cell, from mini" in text
    assert "Selected" in text  # the default metric of a table with tuned rows, and the table says it


def test_an_interrupted_search_trial_resumes_its_cells_from_their_checkpoints(tmp_path, monkeypatch):
    from lnlbench.runner import tune_trial

    spec = parse_spec(grid(tmp_path, methods=["ce"], scope="dataset", epochs=3))
    hp = {"lr": 0.05, "weight_decay": 1e-4}
    monkeypatch.setattr(tune_trial, "shared_loader", lambda refs: load_dataset)

    def search(name: str, stop_after: int | None = None) -> list[dict]:
        (unit,) = units(spec, settings(spec), str(tmp_path / name))
        reports: list[dict] = []

        def report(metrics: dict) -> None:
            reports.append(metrics)
            if stop_after is not None and metrics["epoch"] == stop_after:
                raise KeyboardInterrupt  # the driver went away mid-trial
        monkeypatch.setattr(tune_trial.ray.tune, "report", report)
        try:
            tune_trial.search_trial({"unit": unit.uid, "hp": hp}, {unit.uid: unit})
        except KeyboardInterrupt:
            pass
        return reports

    whole = search("whole")
    assert search("cut", stop_after=1) == whole[:1]
    resumed = search("cut")  # Tune relaunches the trial: each cell continues after its checkpointed epoch
    assert [r["epoch"] for r in resumed] == [2, 3] and resumed == whole[1:]
    assert search("cut") == whole[-1:]  # finished cells are read back, not retrained
