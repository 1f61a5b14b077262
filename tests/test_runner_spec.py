"""The grid runner without Ray: specs and their one-line errors, dry runs, status, leaderboard, --help."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lnlbench.cli import COMMANDS, main
from lnlbench.errors import LnlError
from lnlbench.registry import METHODS, register_method
from lnlbench.runner.resources import Resources, check_fit, concurrency
from lnlbench.runner.spec import expand, load_spec, parse_spec
from lnlbench.runner.status import collect

GRIDS = Path(__file__).resolve().parent.parent / "bench" / "grids"
RUNNER_COMMANDS = ("run", "resume", "status", "quickstart")


def grid(tmp_path: Path, **over) -> dict:
    raw = {"name": "t", "datasets": ["digits"], "methods": ["ce"],
           "noise": [{"name": "symmetric", "rates": [0.2, 0.4]}], "seeds": [0, 1], "epochs": 2, "subset": 10,
           "storage": str(tmp_path / "run")}
    raw.update(over)
    return raw


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lnlbench: error: ")
    return err


# -- specs -------------------------------------------------------------------------------------------------
def test_expand_is_the_cross_product_with_stable_ids(tmp_path):
    spec = parse_spec(grid(tmp_path))
    cells = expand(spec)
    assert len(cells) == 4 and len({c.trial_id for c in cells}) == 4
    assert [c.trial_id for c in expand(parse_spec(grid(tmp_path)))] == [c.trial_id for c in cells]
    assert all(c.config["out_dir"] == str(tmp_path / "run" / "trials") for c in cells)


def test_methods_all_comes_from_the_registry(tmp_path):
    ce = METHODS.get("ce")

    @register_method("zz_tmp_runner")
    class Tmp(ce):
        """A temporary method."""

    try:
        spec = parse_spec(grid(tmp_path, methods="all"))
        assert spec.methods == tuple(METHODS.names()) and "zz_tmp_runner" in spec.methods
    finally:
        METHODS.unregister("zz_tmp_runner")


def test_spec_round_trips_through_its_saved_yaml(tmp_path):
    noise = [{"name": "symmetric", "rates": [0.2]},
             {"name": "asymmetric", "variants": ["dividemix"], "rates": [0.4]}]
    spec = parse_spec(grid(tmp_path, noise=noise))
    again = parse_spec(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize("over, expected", [
    ({"methods": ["ce", "nosuchmethod"]}, "unknown method 'nosuchmethod'"),
    ({"datasets": ["mnistx"]}, "unknown dataset 'mnistx'"),
    ({"noise": [{"name": "symetric", "rates": [0.2]}]}, "unknown noise 'symetric'"),
    ({"noise": [{"name": "symmetric", "rates": [1.2]}]}, "out of range"),
    ({"noise": [{"name": "symmetric"}]}, "needs rates"),
    ({"seeds": []}, "seeds"),
    ({"resources": {"gpus_per_worker": 1.5}}, "cannot fit"),
    ({"resources": {"cpus_per_worker": 0}}, "cpus_per_worker"),
    ({"executor": "fast"}, "executor must be"),
    ({"colour": "red"}, "unknown grid key"),
    ({"overrides": {"ce": {"lrr": 0.1}}}, "unknown hyperparameter"),
])
def test_bad_specs_give_one_line_errors(tmp_path, capsys, over, expected):
    err = one_line_error(capsys, ["run", str(write(tmp_path, grid(tmp_path, **over))), "--dry-run"])
    assert expected in err


def test_unknown_names_list_the_known_ones(tmp_path, capsys):
    def dry(**over) -> str:
        return one_line_error(capsys, ["run", str(write(tmp_path, grid(tmp_path, **over))), "--dry-run"])

    err = dry(methods=["cee"])
    assert "known methods:" in err and "ce" in err
    err = dry(datasets=["digit"])
    assert "known datasets:" in err and "digits" in err
    err = dry(noise=[{"name": "symetric", "rates": [0.2]}])
    assert "known noises:" in err and "symmetric" in err


def test_storage_not_writable_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    err = one_line_error(capsys, ["run", str(write(tmp_path, grid(tmp_path, storage=str(blocker / "run"))))])
    assert "not writable" in err


def test_resources_that_cannot_fit():
    two_cpus = [{"CPU": 2.0, "GPU": 0.0}]
    with pytest.raises(LnlError, match="cannot fit"):
        check_fit(Resources(cpus_per_worker=4), two_cpus)
    gpu_node = [{"CPU": 4.0, "GPU": 1.0}]
    with pytest.raises(LnlError, match="cannot fit"):
        check_fit(Resources(cpus_per_worker=1, gpus_per_worker=2), gpu_node)
    with pytest.raises(LnlError, match="cannot fit"):
        check_fit(Resources(num_workers=3, cpus_per_worker=2, gpus_per_worker=0.5), gpu_node)
    check_fit(Resources(cpus_per_worker=1, gpus_per_worker=0.25), gpu_node)
    assert concurrency(Resources(cpus_per_worker=1, gpus_per_worker=0.25), gpu_node, 100) == 4
    assert concurrency(Resources(cpus_per_worker=1, gpus_per_worker=0.25), two_cpus, 100) == 2  # CPU fallback
    assert concurrency(Resources(cpus_per_worker=1), two_cpus, 1) == 1


def test_dry_run_counts(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, grid(tmp_path))), "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 5 and out[-1].startswith("4 trials")
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


@pytest.mark.parametrize("path", sorted(GRIDS.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_grids_load_and_expand(path, tmp_path):
    spec = load_spec(path)
    if spec.preset == "tuned":  # a grid of tuned recipes expands once `lnlbench tune` wrote them
        import dataclasses

        from lnlbench.recipes import write_entry

        with pytest.raises(LnlError, match="lnlbench tune"):
            expand(dataclasses.replace(spec, recipes=str(tmp_path / "none")))
        for ds in spec.datasets:
            for m in spec.methods:
                write_entry(tmp_path, m, ds, "dataset", "mini", ds, {"hparams": {}}, {})
        spec = dataclasses.replace(spec, recipes=str(tmp_path))
    cells = expand(spec)
    covered = {c.config["method"] for c in cells}
    assert covered and len(cells) >= len(covered) * len(spec.seeds)
    if not spec.require_recipe:  # else only the methods with a recipe (test below)
        assert covered == set(spec.methods)


@pytest.mark.parametrize("name", ["cifar-n", "tiny-imagenet"])
def test_real_data_grids_run_every_method_with_a_recipe(name, capsys):
    """Resolved without data: a method runs where its preset has a recipe, else it is left out with a note."""
    from lnlbench.hparams import lookup_recipe

    spec = load_spec(GRIDS / f"{name}.yaml")
    assert spec.require_recipe and spec.methods == tuple(METHODS.names())
    cells = expand(spec)
    notes = capsys.readouterr().err
    for method in METHODS.names():
        presets = METHODS.get(method).PRESETS
        for dataset in spec.datasets:
            wanted = [(s.name, v) for s in spec.noise if not s.datasets or dataset in s.datasets
                      for v in (s.variants or [None])]
            ok = [lookup_recipe(presets, spec.preset, dataset, n, None if s.rates == (None,) else s.rates[0])
                  .status == "preset" for s in spec.noise if not s.datasets or dataset in s.datasets
                  for n in [s.name]]
            mine = [c for c in cells if c.config["method"] == method and c.config["dataset"] == dataset]
            if all(ok):
                assert len(mine) == len(wanted) * len(spec.seeds) * max(len(s.rates) for s in spec.noise), method
            else:
                assert not mine and f"of {method} on {dataset} left out" in notes, method
    assert any(c.config["method"] == "ce" for c in cells)
    if name == "cifar-n":  # a noisy validation split, so selected_acc exists beside the leaderboard's best
        assert all(c.config["val_fraction"] == 0.1 for c in cells)


def test_require_recipe_with_no_recipe_left_is_an_error(tmp_path):
    raw = {"name": "r", "datasets": ["digits"], "methods": ["ce"], "noise": [{"name": "symmetric", "rates": [0.2]}],
           "seeds": [0], "preset": "paper", "storage": str(tmp_path / "run")}
    assert len(expand(parse_spec(raw))) == 1  # runs on the defaults (recipe status "default")
    with pytest.raises(LnlError, match="with require_recipe"):
        expand(parse_spec({**raw, "require_recipe": True}))
    with pytest.raises(LnlError, match="require_recipe must be true or false"):
        parse_spec({**raw, "require_recipe": "yes"})


def test_quickstart_grid_is_digits_with_a_chosen_set_and_all_on_request():
    from lnlbench.runner.cli import quickstart_spec

    spec = load_spec(GRIDS / "quickstart.yaml")
    assert spec.datasets == ("digits",) and 2 <= len(spec.seeds) <= 3 and spec.executor == "light"
    # the default is a fixed list (the time must not grow with the registry): CE, the seed methods, baselines
    assert "methods: all" not in (GRIDS / "quickstart.yaml").read_text()
    assert {"ce", "car", "moit", "moit_plus", "mlnt", "tssd"} <= set(spec.methods) < set(METHODS.names())
    assert len(spec.methods) <= 10
    args = argparse.Namespace(executor=None, storage=None, methods=None)
    assert quickstart_spec(args).methods == spec.methods
    assert quickstart_spec(argparse.Namespace(**{**vars(args), "methods": "all"})).methods == \
        tuple(METHODS.names())
    listed = quickstart_spec(argparse.Namespace(**{**vars(args), "methods": "ce, gce"}))
    assert listed.methods == ("ce", "gce")
    with pytest.raises(LnlError, match="unknown method 'cee'"):
        quickstart_spec(argparse.Namespace(**{**vars(args), "methods": "ce,cee"}))


# -- status, leaderboard, help -----------------------------------------------------------------------------
def fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    states = {"a_done": "ok", "b_failed": "failed", "c_running": "running", "d_pending": None}
    (run / "trials").mkdir(parents=True)
    (run / "cells.json").write_text(json.dumps({tid: {} for tid in states}))
    for tid, status in states.items():
        if status is None:
            continue
        (run / "trials" / tid).mkdir()
        err = {"type": "RuntimeError", "message": "boom"} if status == "failed" else None
        res = {"trial_id": tid, "status": status, "error": err, "epochs_done": 2, "last_acc": 0.5}
        (run / "trials" / tid / "result.json").write_text(json.dumps(res))
    return run


def test_status_reads_the_run_folder_without_ray(tmp_path):
    run = fake_run(tmp_path)
    assert collect(run).counts() == {"done": 1, "running": 1, "failed": 1, "pending": 1}
    code = ("import sys; from lnlbench.cli import main; rc = main(['status', sys.argv[1]]); "
            "assert 'ray' not in sys.modules, 'status imported ray'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    assert "RuntimeError: boom" in out.stdout and "1 done, 1 running, 1 failed, 1 pending" in out.stdout


def test_status_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert "not a run folder" in one_line_error(capsys, ["status", str(tmp_path)])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A run folder (RUN/trials/<id>/result.json) of real digits trials: CE at sym 40 % (2 seeds) and at
    rate 0 (the clean setting), 2 epochs on 20 images per class."""
    from lnlbench.engine import run_trial

    run = tmp_path_factory.mktemp("digits_run")
    for rate, seed in ((0.4, 0), (0.4, 1), (0.0, 0)):
        run_trial({"method": "ce", "dataset": "digits", "noise": "symmetric", "rate": rate, "seed": seed,
                   "epochs": 2, "subset": 20, "out_dir": str(run / "trials")})
    return run


def test_results_record_the_canonical_noise_label(digits_run):
    labels = sorted(json.loads(p.read_text())["noise_label"] for p in digits_run.glob("trials/*/result.json"))
    assert labels == ["none", "symmetric", "symmetric"]


def test_quickstart_and_status_print_the_aggregators_table(digits_run, capsys):
    """One leaderboard: the quickstart's table (print_leaderboard) and `lnlbench status` print exactly the
    cells of `lnlbench table RUN` (sample std over seeds, the aggregator's noise labels)."""
    from lnlbench.runner.cli import print_leaderboard

    assert main(["table", str(digits_run)]) == 0
    table = capsys.readouterr().out
    print_leaderboard(str(digits_run))
    assert capsys.readouterr().out.strip() == table.strip()
    assert main(["status", str(digits_run)]) == 0
    assert table.strip() in capsys.readouterr().out
    assert "| Method | Digits clean 0% | Digits sym 40% |" in table and " ± " in table


def test_an_aggregator_error_is_an_error(digits_run, monkeypatch):
    """No fallback table hides an aggregator bug."""
    import lnlbench.aggregate.leaderboard as board
    from lnlbench.runner.cli import print_leaderboard

    def broken(*args, **kwargs):
        raise RuntimeError("aggregator bug")

    monkeypatch.setattr(board, "build_leaderboard", broken)
    with pytest.raises(RuntimeError, match="aggregator bug"):
        print_leaderboard(str(digits_run))


def test_noise_variants_and_aliases_are_declared_at_registration():
    """A generator's default variant and aliases come from its register_noise call, and the aggregator's
    labels follow them (no second copy)."""
    from lnlbench.aggregate.labels import noise_label
    from lnlbench.registry import NOISE, register_noise

    assert noise_label("cifar10n", {"label_set": "rand2"}) == "cifar10n:random2"
    assert noise_label("asymmetric", None, 0.4) == "asymmetric:dividemix"
    assert noise_label("cifar100n:noisy100") == "cifar100n:noisy"
    try:
        register_noise("toy_noise", variant_option="style", default_variant="plain",
                       aliases={"p": "plain"})(lambda labels, num_classes, rate, rng, info: None)
        assert noise_label("toy_noise", None, 0.2) == "toy_noise:plain"
        assert noise_label("toy_noise", {"style": "p"}, 0.2) == "toy_noise:plain"
        assert noise_label("toy_noise:fancy", None, 0.0) == "none"
    finally:
        NOISE.unregister("toy_noise")


@pytest.mark.parametrize("name", RUNNER_COMMANDS)
def test_every_runner_command_has_help(name, capsys):
    assert name in COMMANDS
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0 and "usage: lnlbench" in capsys.readouterr().out


def test_uri_storage_helpers_round_trip(tmp_path):
    from lnlbench.runner.storage import read_text, upload_trial, write_text

    uri = f"file://{tmp_path}/store"
    assert read_text(f"{uri}/nothing.json") is None
    write_text(f"{uri}/a/grid.yaml", "x: 1\n")
    assert read_text(f"{uri}/a/grid.yaml") == "x: 1\n"
    trial = tmp_path / "staging" / "tid_1"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text('{"status": "ok"}')
    upload_trial(trial, uri)
    uploaded = tmp_path / "store" / "trials" / "tid_1" / "result.json"
    assert json.loads(uploaded.read_text()) == {"status": "ok"}
