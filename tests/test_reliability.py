"""Reliability: diverging trials fail with the epoch and step, bad inputs are one-line errors, faults on disk
are detected and recovered from (see issue 18)."""
from __future__ import annotations

import pytest
import torch

from lnlbench.config import TrialConfig
from lnlbench.engine import NonFiniteError, check_finite, run_trial
from lnlbench.errors import LnlError


def _cfg(tmp_path, **kw) -> TrialConfig:
    base = dict(method="ce", dataset="digits", noise="symmetric", rate=0.2, seed=0, epochs=2, subset=16,
                preset="mini", hparams={"batch_size": 32}, out_dir=str(tmp_path / "trials"))
    return TrialConfig(**{**base, **kw})


def test_diverging_trial_fails_naming_epoch_and_step(tmp_path):
    res = run_trial(_cfg(tmp_path, hparams={"batch_size": 32, "lr": 1e12}))
    assert res["status"] == "failed" and res["error"]["type"] == "NonFiniteError"
    msg = res["error"]["message"]
    assert "\n" not in msg and "epoch 0, step " in msg and "lr" in msg
    assert res["epochs_done"] == 0  # nothing trained on NaN is recorded as an epoch


def test_check_finite_catches_parameters_and_logged_loss():
    from lnlbench.contract import MethodContext, TrainSet

    ctx = MethodContext(train=TrainSet(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)), num_classes=2,
                        image_shape=(1, 2, 2), device=torch.device("cpu"), seed=0, augmenter=None)

    class M:
        def __init__(self):
            self.net = torch.nn.Linear(2, 2)

    m = M()
    ctx.begin_epoch()
    check_finite(ctx, m, 0, {"loss": 0.5})  # healthy: no error
    with pytest.raises(NonFiniteError, match="non-finite loss .* epoch 3"):
        check_finite(ctx, m, 3, {"loss": float("nan")})
    with torch.no_grad():
        m.net.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="non-finite parameters after epoch 1"):
        check_finite(ctx, m, 1, {})


def test_out_under_a_regular_file_is_one_line_before_anything_runs(tmp_path, capsys):
    from lnlbench.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code = main(["trial", "--rate", "0.2", "--epochs", "1", "--subset", "4", "--out", str(blocker / "sub"),
                 "--progress", "off"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "is a file, not a folder" in err and "Traceback" not in err
    with pytest.raises(LnlError, match="is a file, not a folder"):  # the engine itself checks too
        run_trial(_cfg(tmp_path, out_dir=str(blocker / "sub")))


def test_storage_is_normalised_and_absolute(tmp_path):
    from lnlbench.runner.spec import resolve_storage

    assert resolve_storage("runs/../runs/./g", tmp_path) == str(tmp_path / "runs" / "g")
    assert resolve_storage("file://" + str(tmp_path) + "/a/../b") == str(tmp_path / "b")
    assert resolve_storage("s3://bucket/x/") == "s3://bucket/x"


def test_subset_larger_than_a_class_records_real_counts_and_warns(tmp_path, capsys):
    res = run_trial(_cfg(tmp_path, subset=500, epochs=1, test_subset=3))
    assert res["status"] == "ok", res["error"]
    data = res["data"]
    assert data["subset"] == 500 and sum(data["train_per_class"]) == data["n_train"] + data["n_val"]
    assert max(data["train_per_class"]) < 500 and data["test_per_class"] == [3] * data["num_classes"]
    err = capsys.readouterr().err
    assert "warning: subset 500 per class is more than 10 training class(es) hold" in err


# -- bad input: one-line errors before anything runs -------------------------------------------------------
def _grid_file(tmp_path, **over):
    import yaml

    raw = {"name": "t", "datasets": ["digits"], "methods": ["ce"], "noise": [{"name": "symmetric", "rates": [0.2]}],
           "seeds": [0], "epochs": 1, "subset": 4, "storage": str(tmp_path / "run"), **over}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _one_line(capsys, argv) -> str:
    from lnlbench.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lnlbench: error: "), err
    return err


@pytest.mark.parametrize("over, expected", [
    ({"overrides": {"ce": {"model": "resnet_nope"}}}, "unknown model 'resnet_nope'"),
    ({"overrides": {"ce": {"batch_size": 0}}}, "batch_size must be a positive integer, got 0"),
    ({"overrides": {"ce": {"lr": -0.1}}}, "lr must be a positive number"),
    ({"overrides": {"ce": {"momentum": 1.5}}}, "momentum must be in [0, 1], got 1.5"),
    ({"methods": ["ce", "ce"]}, "methods lists 'ce' twice"),
    ({"datasets": ["digits", "digits"]}, "datasets lists 'digits' twice"),
    ({"noise": [{"name": "symmetric", "rates": [0.2, 0.2]}]}, "rates lists 0.2 twice"),
    ({"noise": [{"name": "symmetric", "rates": [0.2]}, {"name": "symmetric", "rates": [0.2, 0.4]}]},
     "lists the cell 'ce digits symmetric@0.2 s0' twice"),
    ({"seeds": [1, 1]}, "seeds has duplicates"),
])
def test_grid_that_cannot_run_fails_its_dry_run(tmp_path, capsys, over, expected):
    err = _one_line(capsys, ["run", _grid_file(tmp_path, **over), "--dry-run"])
    assert expected in err


@pytest.mark.parametrize("hp, expected", [
    ("batch_size=0", "batch_size must be a positive integer, got 0"),
    ("epochs=0", "epochs must be a positive integer"),
    ("lr=0", "lr must be a positive number, got 0"),
    ("p_threshold=2", "unknown hyperparameter"),  # ce has none: still one line
    ("model=nope", "unknown model 'nope'"),
])
def test_trial_hparam_ranges_at_resolve_time(tmp_path, capsys, hp, expected):
    err = _one_line(capsys, ["trial", "--rate", "0.2", "--hp", hp, "--out", str(tmp_path), "--progress", "off"])
    assert expected in err
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_dividemix_probability_range(tmp_path):
    with pytest.raises(LnlError, match=r"p_threshold must be in \[0, 1\], got 1.5"):
        run_trial(_cfg(tmp_path, method="dividemix", hparams={"p_threshold": 1.5}))


def test_table_ignores_ray_tune_files_and_reports_real_damage(tmp_path, capsys):
    import json

    from lnlbench.aggregate.frame import load_runs
    from lnlbench.cli import main

    res = run_trial(_cfg(tmp_path, epochs=1, subset=4))
    assert res["status"] == "ok", res["error"]
    tune = tmp_path / "t" / "lnl_trial_0001_abc"  # what Ray Tune keeps per trial (JSON lines)
    tune.mkdir(parents=True)
    lines = [{"epoch": e, "test_acc": 0.5, "training_iteration": e + 1, "trial_id": "abc"} for e in range(2)]
    (tune / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tune / "params.json").write_text("{}")
    (tmp_path / "t" / "lone").mkdir()  # JSON lines without the folder's other files: still recognised
    (tmp_path / "t" / "lone" / "result.json").write_text(json.dumps(lines[0]) + "\n" + json.dumps(lines[1]))
    runs = load_runs([tmp_path])
    assert runs.problems == [] and len(runs.trials) == 1 and runs.files == 1
    damaged = tmp_path / "trials" / "x" / "result.json"  # ours, cut short: still reported
    damaged.parent.mkdir()
    damaged.write_text('{\n "schema": "lnlbench.result/1",\n "trial_id": "x", "stat')
    assert main(["table", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") == 1 and "trials/x/result.json" in err and "damaged" in err


# -- security ----------------------------------------------------------------------------------------------
def test_text_file_given_as_npz_is_not_an_npz_archive(tmp_path):
    from lnlbench.datasets.arrayfile import load_array_file
    from lnlbench.datasets.real_noise import load_label_file

    fake = tmp_path / "x.npz"
    fake.write_text("hello, not numpy\n")
    with pytest.raises(LnlError, match="is not an npz archive \\(a text file\\)"):
        load_array_file(fake, "mine")
    with pytest.raises(LnlError, match="label file .* is not an npz archive"):
        load_label_file(fake)
    import pickle

    fake.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(LnlError, match="is not an npz archive \\(another format\\)"):
        load_array_file(fake, "mine")


def test_grid_file_cannot_run_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "grid.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    err = _one_line(capsys, ["run", str(path), "--dry-run"])
    assert "not valid YAML" in err and not marker.exists()
    path.write_text(f"name: t\ndatasets: [digits]\nmethods: [ce]\nseeds: [0]\n"
                    f"noise: [{{name: symmetric, rates: [0.2]}}]\nepochs: !!python/object/apply:os.system ['touch {marker}']\n")
    err = _one_line(capsys, ["run", str(path), "--dry-run"])
    assert "not valid YAML" in err and not marker.exists()
    err = _one_line(capsys, ["run", _grid_file(tmp_path, methods=["os.system"]), "--dry-run"])
    assert "unknown method 'os.system'" in err  # names are registry keys, never imported


def test_option_values_cannot_nest_or_escape_the_trial_folder(tmp_path):
    from lnlbench.config import resolve

    trial = resolve(_cfg(tmp_path, noise_options={"extra": "../../../etc"}, noise="symmetric"))
    assert "/" not in trial.trial_id and trial.trial_dir.parent == tmp_path / "trials"


def test_symlinked_trial_folder_is_refused(tmp_path):
    from lnlbench.config import resolve

    cfg = _cfg(tmp_path, epochs=1, subset=4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "trials").mkdir()
    resolve(cfg).trial_dir.symlink_to(elsewhere)
    with pytest.raises(LnlError, match="leads out of"):
        run_trial(cfg)
    assert not any(elsewhere.iterdir())


# -- faults on disk ----------------------------------------------------------------------------------------
def _strip(history):
    return [{k: v for k, v in rec.items() if not k.endswith("time_s")} for rec in history]


def _crash_at(n):
    def hook(epoch, rec, ckpt):
        if epoch == n:
            raise RuntimeError("crash")
    return hook


@pytest.mark.parametrize("damage", ["truncate_latest", "flip_byte_latest", "truncate_both"])
def test_damaged_checkpoint_is_discarded_and_the_trial_restarts_from_the_previous(tmp_path, capsys, damage):
    from lnlbench.checkpoint import previous
    from lnlbench.config import resolve

    whole = run_trial(_cfg(tmp_path / "a", epochs=4))
    cfg = _cfg(tmp_path / "b", epochs=4)
    assert run_trial(cfg, on_epoch_end=_crash_at(2))["status"] == "failed"
    ckpt = resolve(cfg).trial_dir / "checkpoint.pt"
    data = ckpt.read_bytes()
    if damage == "flip_byte_latest":
        ckpt.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        ckpt.write_bytes(data[: len(data) // 2])  # a crash mid-write without atomic rename
    if damage == "truncate_both":
        prev = previous(ckpt)
        prev.write_bytes(prev.read_bytes()[:1000])
    capsys.readouterr()
    res = run_trial(cfg)
    err = capsys.readouterr().err
    assert res["status"] == "ok" and _strip(res["history"]) == _strip(whole["history"])
    assert f"checkpoint {ckpt} is damaged" in err and "discarded, resuming from the previous checkpoint" in err
    if damage == "truncate_both":
        assert "resuming from epoch 0" in err
    import json

    last = [json.loads(line) for line in (ckpt.parent / "events.jsonl").read_text().splitlines()][-2]
    assert (last["event"], last["epoch"]) == (("start", 0) if damage == "truncate_both" else ("resume", 2))
    assert not ckpt.exists() and not previous(ckpt).exists()  # a finished trial keeps none


def test_checkpoint_with_a_pickled_callable_is_refused(tmp_path):
    import os

    from lnlbench import checkpoint
    from lnlbench.config import resolve

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cfg = _cfg(tmp_path, epochs=2)
    folder = resolve(cfg).trial_dir
    folder.mkdir(parents=True)
    checkpoint.save(folder / "checkpoint.pt", {"trial_id": resolve(cfg).trial_id, "epoch": 0, "method": Evil()})
    res = run_trial(cfg)
    assert res["status"] == "failed" and "refusing to load checkpoint" in res["error"]["message"]
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "sidecar"])
def test_damaged_noise_file_is_regenerated_identically(tmp_path, capsys, damage):
    from pathlib import Path

    first = run_trial(_cfg(tmp_path / "a", epochs=1, subset=4))
    path = Path(first["noise"]["file"])
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    else:
        path.with_suffix(".json").write_text('{"sha256": "ab')
    capsys.readouterr()
    again = run_trial(_cfg(tmp_path / "b", epochs=1, subset=4))
    assert f"noise file {path} is damaged" in capsys.readouterr().err
    assert again["status"] == "ok" and again["noise"]["generated"] is True
    assert again["noise"]["sha256"] == first["noise"]["sha256"]
    assert run_trial(_cfg(tmp_path / "c", epochs=1, subset=4))["noise"]["generated"] is False  # whole again


def test_regenerated_noise_must_match_the_recorded_hash(tmp_path):
    import json
    from pathlib import Path

    first = run_trial(_cfg(tmp_path / "a", epochs=1, subset=4))
    path = Path(first["noise"]["file"])
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**meta, "sha256": "0" * 64}))  # as if the generator changed
    res = run_trial(_cfg(tmp_path / "b", epochs=1, subset=4))  # whole but not matching: refused, as ever
    assert res["status"] == "failed" and "does not match its recorded SHA-256" in res["error"]["message"]
    path.write_bytes(path.read_bytes()[:40])  # cut short: regenerated, and the new labels must match
    res = run_trial(_cfg(tmp_path / "c", epochs=1, subset=4))
    assert res["status"] == "failed" and "does not match the SHA-256 recorded" in res["error"]["message"]


def test_same_seed_same_noise_and_metrics_other_seed_other_noise(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:  # each run its own noise cache (data_root), so the second generates its labels again
        a, b, c = (run_trial(_cfg(tmp_path / k, epochs=2, seed=s, data_root=str(tmp_path / k / "data")))
                   for k, s in (("a", 0), ("b", 0), ("c", 1)))
    finally:
        torch.use_deterministic_algorithms(False)
    assert a["noise"]["generated"] and b["noise"]["generated"] and a["noise"]["file"] != b["noise"]["file"]
    assert a["noise"]["sha256"] == b["noise"]["sha256"] != c["noise"]["sha256"]
    assert _strip(a["history"]) == _strip(b["history"]) and a["best_acc"] == b["best_acc"]


def test_disk_full_writing_result_json_fails_the_trial_and_a_resume_finishes_it(tmp_path, monkeypatch):
    import errno
    import json

    import lnlbench.engine as engine

    whole = run_trial(_cfg(tmp_path / "a", epochs=3))
    real, calls = engine.write_json, {"n": 0}

    def full_disk(path, payload):
        if payload["status"] == "ok" and calls["n"] == 0:  # the final write meets a full disk, once
            calls["n"] += 1
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, payload)

    monkeypatch.setattr(engine, "write_json", full_disk)
    cfg = _cfg(tmp_path / "b", epochs=3)
    res = run_trial(cfg)
    assert res["status"] == "failed" and "No space left on device" in res["error"]["message"]
    folder = tmp_path / "b" / "trials" / res["trial_id"]
    on_disk = json.loads((folder / "result.json").read_text())
    assert on_disk["status"] == "failed" and "No space left" in on_disk["error"]["message"]
    assert (folder / "checkpoint.pt").exists() and len(on_disk["history"]) == 3  # nothing lost
    done = run_trial(cfg)  # the resume: every epoch is in the checkpoint, only the record is written
    assert done["status"] == "ok" and _strip(done["history"]) == _strip(whole["history"])


def test_failure_that_cannot_be_recorded_is_reported(tmp_path, monkeypatch, capsys):
    import errno

    import lnlbench.engine as engine

    def always_full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(engine, "write_json", always_full)
    res = run_trial(_cfg(tmp_path, epochs=1, subset=4))
    assert res["status"] == "failed" and "could not be recorded" in capsys.readouterr().err


# -- one driver per run folder -----------------------------------------------------------------------------
def test_second_driver_refuses_naming_the_first(tmp_path, capsys):
    import json
    import os
    import socket
    import subprocess

    from lnlbench.runner.lock import LOCK_FILE, acquire, describe, driver_lock, release

    with driver_lock(tmp_path) as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()
        with pytest.raises(LnlError, match=f"pid {os.getpid()} on {socket.gethostname()}"):
            acquire(tmp_path)
        # the CLI: one line, exit 2, before Ray starts (the grid's storage is this folder)
        err = _one_line(capsys, ["run", _grid_file(tmp_path, storage=str(tmp_path))])
        assert "another lnlbench driver is running this grid" in err and LOCK_FILE in err
        assert describe(tmp_path).endswith("(running)") and f"pid {os.getpid()}" in describe(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()  # released
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid}))
    assert "stale: that process is gone" in describe(tmp_path)
    path = acquire(tmp_path)  # stale: its process is gone
    assert "stale driver lock" in capsys.readouterr().err
    release(path)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere-node", "pid": 1, "started": "t"}))
    with pytest.raises(LnlError, match="pid 1 on elsewhere-node .*delete the lock if that driver is gone"):
        acquire(tmp_path)


def test_cifar100_pickles_cannot_run_code(tmp_path):
    import os
    import pickle

    import numpy as np

    from lnlbench.datasets.cifar import _read_coarse

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name, obj in (("train", {"coarse_labels": [1, 2], "data": np.zeros((2, 3), np.uint8)}),
                      ("test", {"coarse_labels": [0]}), ("meta", {"coarse_label_names": ["a", "b", "c"]})):
        (tmp_path / name).write_bytes(pickle.dumps(obj))
    y_train, y_test, names = _read_coarse(tmp_path)  # the official shape of data still reads
    assert y_train.tolist() == [1, 2] and names == ["a", "b", "c"]
    (tmp_path / "test").write_bytes(pickle.dumps({"coarse_labels": Evil()}))
    with pytest.raises(LnlError, match="refusing global"):
        _read_coarse(tmp_path)
    assert not marker.exists()
