"""Shared fixtures: every test runs offline with its own data root and output folder."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    """Noise caches and dataset caches go to a per-test folder, never to ~/.cache."""
    monkeypatch.setenv("LNLBENCH_DATA", str(tmp_path / "data"))
    yield


@pytest.fixture
def smoke_trial(tmp_path):
    """``smoke_trial(method, **hparams)``: a short digits trial of ``method`` with its ``SMOKE`` overrides
    (so a few epochs reach its main phase), run three times: uninterrupted, again with the same seed (the
    histories must be equal), and interrupted after epoch 1 then resumed (the resumed epoch must equal the
    uninterrupted one: networks, optimisers, per-sample state and every RNG round-trip the checkpoint).
    Returns the uninterrupted run's result."""
    from lnlbench.config import TrialConfig
    from lnlbench.engine import run_trial
    from lnlbench.registry import METHODS

    def cfg(method: str, out: str, hparams: dict) -> TrialConfig:
        hp = {**getattr(METHODS.get(method), "SMOKE", {}), "batch_size": 32, **hparams}
        return TrialConfig(method=method, dataset="digits", noise="symmetric", rate=0.5, seed=3, epochs=3,
                           subset=16, preset="mini", hparams=hp, out_dir=str(tmp_path / out))

    def strip(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in rec.items() if not k.endswith("time_s")} for rec in history]

    def stop(epoch, rec, ckpt):
        if epoch == 1:
            raise RuntimeError("stop")

    def run(method: str, **hparams) -> dict:
        a = run_trial(cfg(method, "a", hparams))
        assert a["status"] == "ok", a["error"]
        b = run_trial(cfg(method, "b", hparams))
        assert strip(a["history"]) == strip(b["history"]), f"{method} is not deterministic for a seed"
        c = run_trial(cfg(method, "c", hparams), on_epoch_end=stop)
        assert c["status"] == "failed" and c["epochs_done"] == 2
        c = run_trial(cfg(method, "c", hparams))
        assert c["status"] == "ok", c["error"]
        assert strip(c["history"]) == strip(a["history"]), f"{method}: resumed epoch differs"
        return a

    return run
