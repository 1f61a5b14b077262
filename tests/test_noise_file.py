"""Frozen noise files (issue 17): ``lnlbench noise export`` → ``--noise file:PATH`` trains on exactly those
labels; a file for other data is a one-line error; plain .npy / .json arrays from other suites load too."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lnlbench.cli import main
from lnlbench.config import TrialConfig, resolve
from lnlbench.datasets.noise_file import read_noise_file, write_noise_file
from lnlbench.engine import run_trial
from lnlbench.errors import LnlError
from lnlbench.noisefile import export_noise
from lnlbench.runner.spec import expand, parse_spec


def _cfg(tmp_path: Path, **kw) -> TrialConfig:
    base = dict(method="ce", dataset="digits", noise="symmetric", rate=0.4, seed=0, epochs=2, subset=16,
                preset="mini", hparams={"batch_size": 32}, out_dir=str(tmp_path / "trials"))
    return TrialConfig(**{**base, **kw})


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in rec.items() if not k.endswith("time_s")} for rec in history]


@pytest.fixture
def exported(tmp_path):
    """A finished digits trial and its noise exported to ``noise.npz``."""
    res = run_trial(_cfg(tmp_path))
    assert res["status"] == "ok", res["error"]
    out = tmp_path / "noise.npz"
    assert main(["noise", "export", str(tmp_path / "trials" / res["trial_id"]), "--out", str(out)]) == 0
    return res, out


def test_round_trip_trains_on_identical_labels(tmp_path, exported, capsys):
    res, out = exported
    nf = read_noise_file(out)
    assert nf.meta["sha256"] == res["noise"]["sha256"] and nf.meta["dataset"] == "digits"
    assert nf.meta["noise"] == "symmetric" and nf.meta["rate"] == 0.4 and nf.meta["seed"] == 0
    assert nf.meta["clean_fingerprint"] == res["noise"]["clean_fingerprint"] and nf.meta["n"] == 160
    again = run_trial(_cfg(tmp_path, noise=f"file:{out}", rate=None))
    assert again["status"] == "ok", again["error"]
    assert again["noise"]["sha256"] == res["noise"]["sha256"]
    assert again["noise"]["file"] == str(out) and again["noise"]["options"]["checks"].endswith("clean labels")
    assert again["noise"]["realized_rate"] == res["noise"]["realized_rate"]  # measured against clean labels
    assert again["noise_label"] == f"file:noise@{res['noise']['sha256'][:8]}"
    assert f"_file-noise_{res['noise']['sha256'][:8]}_na_s0_" in again["trial_id"]
    assert _strip(again["history"]) == _strip(res["history"])  # same labels, same seed: the same training
    assert "warning" not in capsys.readouterr().err


def test_run_folder_with_one_trial_and_argument_errors(tmp_path, exported, capsys):
    res, _ = exported
    assert main(["noise", "export", str(tmp_path / "trials"), "--out", str(tmp_path / "b.npz")]) == 0
    assert read_noise_file(tmp_path / "b.npz").meta["trial_id"] == res["trial_id"]
    assert run_trial(_cfg(tmp_path, seed=1))["status"] == "ok"
    capsys.readouterr()
    for argv, expected in [
        ([str(tmp_path / "trials")], "holds 2 trials; pass one trial folder, e.g."),
        ([str(tmp_path / "nowhere")], "is not a trial or run folder"),
        ([str(tmp_path / "data")], "no lnlbench trial under"),
    ]:
        assert main(["noise", "export", *argv, "--out", str(tmp_path / "c.npz")]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as exc:  # --out is required
        main(["noise", "export", str(tmp_path / "trials")])
    assert exc.value.code == 2
    assert main(["noise"]) == 2 and "export" in capsys.readouterr().out
    assert not (tmp_path / "c.npz").exists()


def test_export_of_a_trial_whose_noise_file_is_gone(tmp_path, exported):
    res, _ = exported
    Path(res["noise"]["file"]).unlink()
    with pytest.raises(LnlError, match="is missing .*rerun the trial here"):
        export_noise(tmp_path / "trials" / res["trial_id"], tmp_path / "x.npz")


def _failure(tmp_path: Path, **kw) -> str:
    res = run_trial(_cfg(tmp_path, rate=None, **kw))
    assert res["status"] == "failed"
    msg = res["error"]["message"]
    assert len(msg.splitlines()) == 1, msg
    return msg


def test_file_for_other_data_is_refused(tmp_path, exported):
    _, out = exported
    nf = read_noise_file(out)
    assert "has 160 labels but this trial trains on 170 images (it was made with subset=16, subset_seed=0)" \
        in _failure(tmp_path, noise=f"file:{out}", subset=17)
    msg = _failure(tmp_path, noise=f"file:{out}", subset_seed=1)  # same length, other images
    assert "was made for other clean labels" in msg and "subset=16, subset_seed=0" in msg
    other = tmp_path / "other.npz"
    write_noise_file(other, nf.labels, nf.transition, {**nf.meta, "dataset": "cifar10"})
    assert "is for dataset 'cifar10', not 'digits'" in _failure(tmp_path, noise=f"file:{other}")
    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, labels=nf.labels[::-1], transition=nf.transition,
             meta=np.array(json.dumps(nf.meta)))
    with pytest.raises(LnlError, match="does not match the SHA-256 recorded in it"):
        resolve(_cfg(tmp_path, noise=f"file:{tampered}", rate=None))
    with pytest.raises(LnlError, match="noise file not found"):
        resolve(_cfg(tmp_path, noise=f"file:{tmp_path / 'none.npz'}", rate=None))
    with pytest.raises(LnlError, match="fixes the rate; omit the rate"):
        resolve(_cfg(tmp_path, noise=f"file:{out}", rate=0.2))


@pytest.mark.parametrize("suffix", [".npy", ".json", ".npz"])
def test_plain_label_arrays_check_the_length_and_say_so(tmp_path, exported, capsys, suffix):
    res, out = exported
    labels = read_noise_file(out).labels
    plain = tmp_path / f"plain{suffix}"
    if suffix == ".npy":
        np.save(plain, labels.astype(np.int32))
    elif suffix == ".json":
        plain.write_text(json.dumps(labels.tolist()))
    else:
        np.savez(plain, noisy_label=labels)
    capsys.readouterr()
    again = run_trial(_cfg(tmp_path, noise=f"file:{plain}", rate=None))
    assert again["status"] == "ok", again["error"]
    assert again["noise"]["sha256"] == res["noise"]["sha256"] and again["noise"]["options"]["checks"] == "length"
    assert "plain label array without metadata: only its length is checked" in capsys.readouterr().err
    assert _strip(again["history"]) == _strip(res["history"])
    assert "has 160 labels but this trial trains on 170" in _failure(tmp_path, noise=f"file:{plain}", subset=17)


@pytest.mark.parametrize("content, expected", [
    ('{"a": 1}', "must be a JSON list of integer labels"),
    ("[0, 1.5]", "must be a JSON list of integer labels"),
    ("not json", "cannot read noise file"),
])
def test_bad_plain_files(tmp_path, content, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(LnlError, match=expected):
        read_noise_file(bad)
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LnlError, match="pickled arrays are refused"):
        read_noise_file(tmp_path / "obj.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros(3, dtype=int), b=np.zeros(3, dtype=int))
    with pytest.raises(LnlError, match="no 'labels'"):
        read_noise_file(tmp_path / "two.npz")
    with pytest.raises(LnlError, match="must be an .npz"):
        read_noise_file(bad.rename(tmp_path / "bad.txt"))


def test_grid_entries_name_files(tmp_path, exported, monkeypatch):
    _, out = exported
    monkeypatch.chdir(tmp_path)
    raw = {"name": "frozen", "datasets": ["digits"], "methods": ["ce"], "seeds": [0], "subset": 16,
           "epochs": 1, "storage": str(tmp_path / "run"),
           "noise": [{"name": "file", "path": "noise.npz"}]}
    (cell,) = expand(parse_spec(raw))
    assert cell.config["noise_options"]["path"] == str(out)  # made absolute: a worker may run elsewhere
    assert f"file-noise_{read_noise_file(out).meta['sha256'][:8]}" in cell.trial_id
    (same,) = expand(parse_spec({**raw, "noise": [f"file:{out}"]}))
    assert same.trial_id == cell.trial_id
    for bad, expected in [({"name": "file"}, "needs one path"),
                          ({"name": "symmetric", "rates": [0.2], "path": "x.npy"}, "path is for labels frozen"),
                          ({"name": "file", "path": "missing.npz"}, "noise file not found")]:
        with pytest.raises(LnlError, match=expected):
            expand(parse_spec({**raw, "noise": [bad]}))
