"""Mixed precision: every preset trains in fp32 unless ``--amp`` asks otherwise, and the result says so."""
from __future__ import annotations

import pytest
import torch

from lnlbench.config import TrialConfig, resolve
from lnlbench.engine import Trial, amp_dtype, run_trial


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA device as far as precision choices go (bf16 supported), on a CPU-only machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return torch.device("cuda")


@pytest.mark.parametrize("preset", ["paper", "mini"])
def test_auto_is_fp32_on_cuda_for_every_preset(tmp_path, fake_cuda, preset):
    cfg = TrialConfig(method="dividemix", dataset="cifar10", noise="symmetric", rate=0.5, preset=preset,
                      device="cuda", out_dir=str(tmp_path))
    trial = resolve(cfg)
    assert trial.amp == "off" and amp_dtype(trial.amp, fake_cuda) is None
    assert amp_dtype("auto", fake_cuda) is None  # (was bf16 on CUDA)
    assert resolve(TrialConfig(**{**cfg.to_dict(), "amp": "off"})).trial_id == trial.trial_id


def test_amp_flag_overrides_and_enters_the_trial_id(tmp_path, fake_cuda):
    cfg = TrialConfig(method="gce", dataset="cifar10", noise="asymmetric", rate=0.4, preset="paper",
                      device="cuda", out_dir=str(tmp_path))
    fp32 = resolve(cfg)
    bf16 = resolve(TrialConfig(**{**cfg.to_dict(), "amp": "bf16"}))
    assert bf16.amp == "bf16" and amp_dtype(bf16.amp, fake_cuda) == torch.bfloat16
    assert bf16.trial_id != fp32.trial_id  # a bf16 run is another trial; fp32 ids are as before
    assert resolve(TrialConfig(**{**cfg.to_dict(), "amp": "fp16"})).amp == "fp16"


def test_result_records_the_precision(tmp_path):
    base = dict(method="ce", dataset="digits", noise="symmetric", rate=0.4, epochs=1, subset=8,
                out_dir=str(tmp_path))
    res = run_trial(TrialConfig(**base))
    assert res["status"] == "ok" and res["amp"] == "off"
    res = run_trial(TrialConfig(**base, amp="bf16"))  # bf16 autocast runs on CPU too
    assert res["status"] == "ok" and res["amp"] == "bf16"
    trial = Trial(resolve(TrialConfig(**base, amp="bf16")), None)
    trial.build()
    assert trial.ctx.amp_dtype == torch.bfloat16
