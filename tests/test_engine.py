"""The trial engine: result.json schema, noise caching, resume, failures (the clean-label leak walker over
every method is in test_methods_contract.py)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from lnlbench.config import TrialConfig, resolve
from lnlbench.engine import run_trial
from lnlbench.errors import LnlError
from lnlbench.results import DataFields, NoiseFields, TrialResult

FAST = dict(method="ce", dataset="digits", noise="symmetric", rate=0.4, seed=0, epochs=2, subset=20)

TOP_KEYS = {"schema", "trial_id", "status", "error", "config", "method", "dataset", "noise", "seed",
            "preset", "recipe", "hparams", "method_flags", "data", "history", "best_acc", "best_epoch", "last_acc",
            "final_acc", "selected_acc", "epochs_done", "wall_time_s", "device", "device_name",
            "device_hours", "versions", "git_commit", "host", "started_at", "finished_at", "noise_label",
            "golden"}


def _cfg(tmp_path, **kw) -> TrialConfig:
    return TrialConfig(**{**FAST, "out_dir": str(tmp_path / "runs"), **kw})


def test_result_json_schema(tmp_path):
    res = run_trial(_cfg(tmp_path, val_fraction=0.1))
    path = tmp_path / "runs" / res["trial_id"] / "result.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["status"] == "ok" and on_disk["error"] is None
    assert TOP_KEYS <= set(on_disk)
    # The schema is the dataclass: exactly its fields are written, at every level.
    assert set(on_disk) == {f.name for f in dataclasses.fields(TrialResult)}
    assert set(on_disk["noise"]) == {f.name for f in dataclasses.fields(NoiseFields)}
    assert set(on_disk["data"]) == {f.name for f in dataclasses.fields(DataFields)}
    assert {"selected_epoch", "amp", "recipe", "noise_label"} <= set(on_disk) and "attempts" not in on_disk
    assert on_disk["torch_threads"] == torch.get_num_threads()  # float results' last bits depend on it
    assert on_disk["cpu"].endswith(f"[{torch.backends.cpu.get_cpu_capability()}]")  # and on the CPU's kernels
    assert on_disk["data"]["source"] and len(on_disk["data"]["transition"]) == on_disk["data"]["num_classes"]
    assert on_disk["history"][on_disk["selected_epoch"]]["test_acc"] == on_disk["selected_acc"]
    assert on_disk["schema"] == "lnlbench.result/1"
    noise = on_disk["noise"]
    assert {"name", "options", "rate", "file", "sha256", "realized_rate"} <= set(noise)
    assert len(noise["sha256"]) == 64 and 0.25 < noise["realized_rate"] < 0.45
    assert len(on_disk["history"]) == 2
    for rec in on_disk["history"]:
        assert {"epoch", "lr", "test_acc", "val_acc", "loss", "train_time_s", "eval_time_s"} <= set(rec)
        assert 0.0 <= rec["test_acc"] <= 1.0 and np.isfinite(rec["loss"])
    accs = [h["test_acc"] for h in on_disk["history"]]
    assert on_disk["best_acc"] == max(accs) and on_disk["last_acc"] == pytest.approx(np.mean(accs))
    assert on_disk["selected_acc"] in accs
    assert on_disk["data"]["n_train"] + on_disk["data"]["n_val"] == 200
    assert on_disk["versions"]["torch"] and on_disk["hparams"]["model"] == "mlp"
    assert not (path.parent / "checkpoint.pt").exists()  # removed after a finished trial


def test_noise_generated_once_and_reused_with_hash(tmp_path):
    a = run_trial(_cfg(tmp_path))
    b = run_trial(_cfg(tmp_path, hparams={"lr": 0.01}))  # another config, same cell
    assert a["noise"]["generated"] is True and b["noise"]["generated"] is False
    assert a["noise"]["sha256"] == b["noise"]["sha256"] and a["noise"]["file"] == b["noise"]["file"]
    c = run_trial(_cfg(tmp_path, seed=1))
    assert c["noise"]["sha256"] != a["noise"]["sha256"]


def test_tampered_noise_file_is_refused(tmp_path):
    a = run_trial(_cfg(tmp_path))
    path = a["noise"]["file"]
    z = dict(np.load(path))
    z["labels"] = (z["labels"] + 1) % 10
    np.savez(path, **z)
    res = run_trial(_cfg(tmp_path, seed=0, hparams={"lr": 0.02}))
    assert res["status"] == "failed" and "SHA-256" in res["error"]["message"]


def test_failing_trial_is_recorded_not_lost(tmp_path):
    def boom(epoch, rec, ckpt):
        raise RuntimeError("injected")
    res = run_trial(_cfg(tmp_path), on_epoch_end=boom)
    assert res["status"] == "failed" and res["error"]["message"] == "injected"
    on_disk = json.loads((tmp_path / "runs" / res["trial_id"] / "result.json").read_text())
    assert on_disk["status"] == "failed" and "RuntimeError" in on_disk["error"]["traceback"]
    with pytest.raises(RuntimeError):
        run_trial(_cfg(tmp_path, resume=False), on_epoch_end=boom, raise_on_error=True)


def test_resume_continues_from_checkpoint(tmp_path):
    def stop_after_first(epoch, rec, ckpt):
        if epoch == 0:
            raise RuntimeError("killed")
    first = run_trial(_cfg(tmp_path, epochs=3), on_epoch_end=stop_after_first)
    assert first["status"] == "failed" and first["epochs_done"] == 1
    done = run_trial(_cfg(tmp_path, epochs=3))
    assert done["status"] == "ok" and [h["epoch"] for h in done["history"]] == [0, 1, 2]
    events = [json.loads(x)["event"] for x in
              (tmp_path / "runs" / done["trial_id"] / "events.jsonl").read_text().splitlines()]
    assert events == ["start", "failed", "resume", "end"]


@pytest.mark.parametrize("bad, match", [
    (dict(method="nope"), "unknown method 'nope'"),
    (dict(dataset="cifar11"), "unknown dataset 'cifar11'"),
    (dict(noise="symetric"), "did you mean 'symmetric'"),
    (dict(rate=1.0), r"noise rate must be in \[0, 1\)"),
    (dict(rate=-0.1), r"noise rate must be in \[0, 1\)"),
    (dict(rate=None), "needs a rate"),
    (dict(hparams={"lrr": 0.1}), "unknown hyperparameter"),
    (dict(preset="huge"), "unknown preset 'huge'"),
    (dict(noise="symmetric:x"), "takes no variant"),
    (dict(hparams={"milestones": "soon"}), "must be a list"),
    (dict(test_subset=0), "test_subset"),
])
def test_bad_config_one_line_errors(tmp_path, bad, match):
    with pytest.raises(LnlError, match=match) as err:
        resolve(_cfg(tmp_path, **bad))
    assert "\n" not in str(err.value)


def test_missing_data_file_is_a_clear_failure(tmp_path):
    res = run_trial(_cfg(tmp_path, data_file=str(tmp_path / "nope.npz")))
    assert res["status"] == "failed" and "does not exist" in res["error"]["message"]


def test_asymmetric_without_mapping_fails_clearly(tmp_path):
    res = run_trial(_cfg(tmp_path, noise="asymmetric"))
    assert res["status"] == "failed" and res["error"]["type"] == "LnlError"
    assert "mapping" in res["error"]["message"]


def test_scalar_milestone_becomes_a_tuple(tmp_path):
    assert resolve(_cfg(tmp_path, hparams={"milestones": 20})).hparams.milestones == (20,)


def test_test_subset_and_augment_off_are_trial_options(tmp_path):
    default = resolve(_cfg(tmp_path))
    assert default.augment and default.test_subset is None
    assert resolve(_cfg(tmp_path, augment=True)).trial_id == default.trial_id  # ids of old runs stay valid
    off = resolve(_cfg(tmp_path, augment=False, test_subset=5))
    assert off.trial_id != default.trial_id
    res = run_trial(_cfg(tmp_path, augment=False, test_subset=5))
    assert res["status"] == "ok", res["error"]
    assert res["data"]["n_test"] == 50 and res["data"]["test_subset"] == 5 and res["data"]["augment"] is False


def test_cifar_mini_preset_sets_the_trial_protocol(tmp_path):
    from lnlbench.hparams import MINI_CIFAR

    t = resolve(TrialConfig(method="ce", dataset="cifar10", noise="symmetric", rate=0.5, preset="mini"))
    p = MINI_CIFAR.protocol
    assert (t.subset, t.test_subset, t.augment) == (p.subset, p.test_subset, False) == (300, 200, False)
    t = resolve(TrialConfig(method="ce", dataset="cifar10", noise="symmetric", rate=0.5, preset="mini",
                            augment=True, test_subset=None))
    assert t.augment  # the user's choice wins over the preset's


def test_clean_validation_set_selects_the_epoch():
    from lnlbench.results import summarize

    hist = [{"epoch": e, "test_acc": t, "val_acc": v, "clean_val_acc": c}
            for e, (t, v, c) in enumerate([(0.5, 0.9, 0.2), (0.6, 0.1, 0.7), (0.7, 0.2, 0.3)])]
    out = summarize(hist)
    assert out["selected_acc"] == 0.6 and out["selected_epoch"] == 1  # the clean set wins over the noisy one
    out = summarize([{k: v for k, v in h.items() if k != "clean_val_acc"} for h in hist])
    assert out["selected_acc"] == 0.5


def test_engine_scores_a_datasets_clean_validation_set(tmp_path):
    from lnlbench.data import load_dataset

    def with_val(*args, **kw):  # the loader is a parameter of run_trial: nothing is patched
        info = load_dataset(*args, **kw)
        return dataclasses.replace(info, x_val=info.x_test[:40], y_val=info.y_test[:40])
    res = run_trial(_cfg(tmp_path), load=with_val)
    assert res["status"] == "ok", res["error"]
    assert all(0 <= h["clean_val_acc"] <= 1 for h in res["history"]) and res["data"]["n_clean_val"] == 40
    assert res["selected_acc"] is not None


def test_summary_scores_only_the_methods_own_network_from_scored_from():
    from lnlbench.results import summarize

    hist = [{"epoch": e, "test_acc": a, "val_acc": v} for e, (a, v) in
            enumerate([(0.9, 0.8), (0.5, 0.4), (0.6, 0.3), (0.4, 0.5)])]
    full = summarize(hist)
    assert (full["best_epoch"], full["selected_epoch"], full["scored_from_epoch"]) == (0, 0, 0)
    own = summarize(hist, scored_from=1)  # epoch 0 is a discarded estimator's: never best, never selected
    assert (own["best_acc"], own["best_epoch"]) == (0.6, 2)
    assert (own["selected_acc"], own["selected_epoch"]) == (0.4, 3)
    assert own["last_acc"] == full["last_acc"] and own["scored_from_epoch"] == 1
    early = summarize(hist[:1], scored_from=1)  # not reached yet
    assert early["best_acc"] is None and early["selected_acc"] is None and early["final_acc"] == 0.9


def test_end_event_is_logged_before_the_result_says_ok(tmp_path, monkeypatch):
    """A process killed between the two must not leave an ``ok`` result whose log lacks ``end`` (resume would
    skip it as finished); the other order leaves a ``running`` result that a resume finishes."""
    from lnlbench.engine import Trial

    seen: list[list[str]] = []
    write = Trial.write

    def spy(self, status, error=None):
        if status == "ok":
            seen.append([json.loads(line)["event"] for line in (self.dir / "events.jsonl").read_text().splitlines()])
        return write(self, status, error)

    monkeypatch.setattr(Trial, "write", spy)
    assert run_trial(_cfg(tmp_path))["status"] == "ok"
    assert seen == [["start", "end"]]
