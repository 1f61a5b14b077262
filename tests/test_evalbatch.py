"""The batch of every evaluation-style pass: chosen by device in one place (lnlbench.evalbatch), overridden
by the trial's ``eval_batch_size``, and irrelevant to the result up to float error (eval mode)."""
from __future__ import annotations

import pytest
import torch

from lnlbench import evalbatch
from lnlbench.components import per_sample_loss
from lnlbench.components.transition import predict_probs
from lnlbench.config import TrialConfig
from lnlbench.engine import build_trial, run_trial
from lnlbench.errors import LnlError
from lnlbench.models.small import cnn_small
from lnlbench.registry import METHODS

ODD = 7  # a batch no pass would pick by itself


def test_the_choice_depends_on_the_device_and_the_override_wins():
    assert evalbatch.eval_batch_size("cpu") == evalbatch.CPU_BATCH == 64
    assert evalbatch.eval_batch_size(torch.device("cuda")) == evalbatch.CUDA_BATCH == 1024
    assert evalbatch.eval_batch_size("cuda:1", streamed=True) == evalbatch.CUDA_STREAMED_BATCH
    assert evalbatch.eval_batch_size("cpu", streamed=True) == evalbatch.CPU_BATCH
    assert evalbatch.eval_batch_size("cuda", override=64) == evalbatch.eval_batch_size("cpu", override=64) == 64
    with pytest.raises(LnlError, match="eval_batch_size must be a positive integer"):
        evalbatch.eval_batch_size("cpu", override=0)


def test_a_bad_eval_batch_size_is_refused_at_the_edge(tmp_path):
    cfg = TrialConfig(method="ce", dataset="digits", noise="symmetric", rate=0.2, epochs=1, subset=8,
                      eval_batch_size=0, out_dir=str(tmp_path))
    with pytest.raises(LnlError, match="eval_batch_size must be a positive integer"):
        build_trial(cfg)


def _trial(tmp_path, method: str, **kw):
    cls = METHODS.get(method)
    cfg = TrialConfig(method=method, dataset="digits", noise="symmetric", rate=0.5, seed=0, epochs=2, subset=20,
                      preset="mini", hparams={**getattr(cls, "SMOKE", {}), "batch_size": 32},
                      out_dir=str(tmp_path / method), **kw)
    return build_trial(cfg)


def _seen_batches(net: torch.nn.Module) -> list[int]:
    """Batch sizes through the net's first layer (its input layer, whichever of forward / forward_features /
    embed a pass calls)."""
    seen: list[int] = []
    first = next(m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    first.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    return seen


# method -> (the network its pass runs, the pass): every no-grad pass over the train set in methods/
PASSES = {
    "dividemix": (lambda m: m.net1, lambda m: m._divide(0, m.net1)),  # per-sample losses before the GMM
    "gce": (lambda m: m.model, lambda m: m.update_weights()),  # the truncation (prune) pass
    "moit": (lambda m: m.model, lambda m: m.embeddings()),  # kNN features
    "unicon": (lambda m: m.net1, lambda m: m.divide()),  # both nets' softmax before the JSD selection
    "pes": (lambda m: m.model, lambda m: m.select()),  # two-view softmax
    "tssd": (lambda m: m.net1, lambda m: m._divide_tssd(m.net1)),  # logits and features
}


@pytest.mark.parametrize("method", sorted(PASSES))
def test_every_pass_takes_its_batch_from_the_one_function(tmp_path, monkeypatch, method):
    calls = []

    def fake(device, override=None, streamed=False):
        calls.append((torch.device(device).type, override))
        return ODD

    monkeypatch.setattr(evalbatch, "eval_batch_size", fake)
    trial = _trial(tmp_path, method)
    net_of, run_pass = PASSES[method]
    seen = _seen_batches(net_of(trial.method))
    run_pass(trial.method)
    n = len(trial.ctx.train)
    assert seen and max(seen) == ODD and sum(b == ODD for b in seen) >= n // ODD
    assert calls and calls[0] == ("cpu", None)

    seen.clear()  # the engine's test pass too
    trial.accuracy(trial.x_test, trial.y_test)
    assert max(seen) == ODD and len(seen) >= len(trial.y_test) // ODD


def test_the_trial_option_reaches_the_methods_passes_and_the_test_pass(tmp_path):
    trial = _trial(tmp_path, "dividemix", eval_batch_size=5)
    assert trial.ctx.eval_batch_size == 5
    seen = _seen_batches(trial.method.net1)
    trial.method._divide(0, trial.method.net1)
    assert max(seen) == 5
    seen.clear()
    trial.accuracy(trial.x_test, trial.y_test)
    assert max(seen) == 5


def test_the_components_default_to_the_devices_choice(monkeypatch):
    monkeypatch.setattr(evalbatch, "eval_batch_size", lambda device, override=None, streamed=False: 3)
    lin = torch.nn.Linear(4, 2)
    seen = _seen_batches(lin)
    x, y = torch.randn(10, 4), torch.randint(0, 2, (10,))
    per_sample_loss(lin, x, y, lambda b: b)
    predict_probs(lin, x, lambda b: b)
    assert seen == [3, 3, 3, 1] * 2


def test_eval_passes_are_batch_size_invariant_in_eval_mode():
    torch.manual_seed(0)
    net = cnn_small(10).eval()
    x = torch.randint(0, 256, (150, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (150,))
    norm = lambda b: b.float() / 255
    ref = per_sample_loss(net, x, y, norm, batch_size=150)
    for bs in (1, 32, 64, 128, 1024):
        assert torch.allclose(per_sample_loss(net, x, y, norm, batch_size=bs), ref, atol=1e-5, rtol=1e-5)


def _history(result: dict) -> list[dict]:
    return [{k: v for k, v in rec.items() if not k.endswith("time_s")} for rec in result["history"]]


def test_a_fixed_batch_gives_identical_results_whatever_the_devices_choice(tmp_path, monkeypatch):
    def run(default: int, out: str) -> dict:
        monkeypatch.setattr(evalbatch, "eval_batch_size",
                            lambda device, override=None, streamed=False: override or default)
        cfg = TrialConfig(method="gce", dataset="digits", noise="symmetric", rate=0.5, seed=1, epochs=3, subset=16,
                          preset="mini", hparams={**METHODS.get("gce").SMOKE, "batch_size": 32},
                          eval_batch_size=48, out_dir=str(tmp_path / out))
        result = run_trial(cfg)
        assert result["status"] == "ok", result["error"]
        return result

    assert _history(run(5, "a")) == _history(run(1000, "b"))
