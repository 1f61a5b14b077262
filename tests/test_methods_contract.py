"""Contract tests over EVERY registered method: a new method is tested here for free.

Each runs a few CPU epochs on a small digits subset with its ``mini`` preset: finite losses, test accuracy
in range, the same seed gives the same result, and a resumed trial's next epoch equals the uninterrupted
one (checkpoint round-trip of networks, optimisers, per-sample state and every RNG).
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from lnlbench.config import TrialConfig
from lnlbench.engine import run_trial
from lnlbench.registry import METHODS


def _cfg(tmp_path, method, out, **kw):
    cls = METHODS.get(method)
    small = {f.name: 32 for f in dataclasses.fields(cls.Hparams) if f.name == "batch_size"}
    return TrialConfig(method=method, dataset="digits", noise="symmetric", rate=0.5, seed=3, epochs=3,
                       subset=16, preset="mini", hparams=small, out_dir=str(tmp_path / out), **kw)


@pytest.mark.parametrize("method", METHODS.names())
def test_method_has_mini_preset_and_docstring(method):
    cls = METHODS.get(method)
    assert "digits" in cls.PRESETS.get("mini", {}), f"{method} needs a mini preset for digits"
    assert "paper" in cls.PRESETS, f"{method} needs a paper preset"
    module = __import__(cls.__module__, fromlist=["_"])
    assert module.__doc__ and "eviation" in module.__doc__, f"{method}'s module docstring must list deviations"


@pytest.mark.parametrize("method", METHODS.names())
def test_method_contract(tmp_path, method):
    a = run_trial(_cfg(tmp_path, method, "a"))
    assert a["status"] == "ok", a["error"]
    for rec in a["history"]:
        assert 0.0 <= rec["test_acc"] <= 1.0
        for key, val in rec.items():
            if isinstance(val, float):
                assert math.isfinite(val), f"{method}: {key} is not finite at epoch {rec['epoch']}"
    # same seed, same result
    b = run_trial(_cfg(tmp_path, method, "b"))
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    assert strip(a["history"]) == strip(b["history"]), f"{method} is not deterministic for a seed"

    # interrupted after epoch 1, resumed: epoch 2 must equal the uninterrupted run's
    def stop(epoch, rec, ckpt):
        if epoch == 1:
            raise RuntimeError("stop")
    c = run_trial(_cfg(tmp_path, method, "c"), on_epoch_end=stop)
    assert c["status"] == "failed" and c["epochs_done"] == 2
    c = run_trial(_cfg(tmp_path, method, "c"))
    assert c["status"] == "ok"
    assert strip(c["history"]) == strip(a["history"]), f"{method}: resumed epoch differs"
