"""CAR (reconstructed from MacLLL/NAL): the loss by hand, its τ → 1 limit, the target update and its schedule,
the confidence branch kept out of ``predict``, and the reconstruction flag in result.json."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lnlbench.components import require_features
from lnlbench.config import TrialConfig
from lnlbench.engine import run_trial
from lnlbench.errors import LnlError
from lnlbench.hparams import as_recipe, build_hparams, lr_at
from lnlbench.methods.car import (
    CAR,
    CARAux,
    CARHparams,
    car_loss,
    clamped_one_hot,
    confidence,
    is_target_epoch,
    update_targets,
)

# logits (0, ln 3) → p = (0.25, 0.75); label 1 → t = (1e-4, 1); confidence logit 0 → τ = 0.5.
LOGITS = torch.tensor([[0.0, math.log(3.0)]])
T = clamped_one_hot(torch.tensor([1]), 2, 1e-4)


def test_loss_by_hand():
    # q = 0.5·(0.25, 0.75) + 0.5·(1e-4, 1) = (0.12505, 0.875)
    # CE = −(1e-4·ln 0.12505 + ln 0.875) = 0.1337393; penalty = ln 2; RCE = 0.12505·ln 1e4 = 1.1517531
    loss, parts = car_loss(LOGITS, torch.zeros(1), T, lam=10.0, beta=0.1)
    assert parts["ce"].item() == pytest.approx(0.1337393, abs=1e-6)
    assert parts["penalty"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert parts["rce"].item() == pytest.approx(1.1517531, abs=1e-6)
    assert loss.item() == pytest.approx(7.1803864, abs=1e-5)
    loss0, _ = car_loss(LOGITS, torch.zeros(1), T, lam=10.0, beta=0.0)  # CAR itself: no auxiliary term
    assert loss0.item() == pytest.approx(0.1337393 + 10 * math.log(2), abs=1e-5)


def test_confident_limit_is_ce_toward_the_target():
    """τ → 1: q = p, so the first term is the (soft) cross-entropy of the target and the penalty vanishes."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    target = clamped_one_hot(y, 4, 1e-4)
    loss, parts = car_loss(logits, torch.full((5,), 40.0), target, lam=10.0, beta=0.0)
    expected = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(parts["ce"], expected.detach(), atol=1e-5, rtol=1e-5)
    assert parts["penalty"].item() < 1e-12
    g_car, = torch.autograd.grad(loss, logits)
    g_ce, = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(g_car, g_ce, atol=1e-5, rtol=1e-4)


def test_low_confidence_shrinks_the_gradient_to_the_logits():
    """The gradient reaching the logits is scaled by τ: a doubtful sample pushes its prediction less."""
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    target = clamped_one_hot(torch.tensor([2]), 3, 1e-4)
    norms = []
    for c in (4.0, -4.0):
        loss, _ = car_loss(logits, torch.tensor([c]), target, lam=10.0, beta=0.0)
        g, = torch.autograd.grad(loss, logits)
        norms.append(g.norm().item())
    assert norms[1] < 0.1 * norms[0]


def test_target_update_only_above_delta_and_clamped():
    table = clamped_one_hot(torch.tensor([0, 1, 2]), 3, 1e-4)
    before = table.clone()
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    update_targets(table, torch.tensor([0, 2]), probs, torch.tensor([0.9, 0.3]), momentum=0.9, delta=0.5,
                   floor=1e-4)
    torch.testing.assert_close(table[0], (0.9 * before[0] + 0.1 * probs[0]).clamp(1e-4, 1))
    torch.testing.assert_close(table[1:], before[1:])  # row 1 not in the batch, row 2 below δ
    update_targets(table, torch.tensor([1]), torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([1.0]), 0.9, 0.0,
                   1e-4)
    assert table.min().item() >= torch.tensor(1e-4).item() and table.max().item() <= 1.0


def test_targets_change_only_on_scheduled_epochs():
    # official 1-based epochs 60, 70, 80, ... with es 60 and a ten-epoch restart cycle
    on = [e for e in range(120) if is_target_epoch(e, 60, 10)]
    assert on == [59, 69, 79, 89, 99, 109, 119]
    hp = CARHparams()
    # those are the last epoch of each CosineAnnealingWarmRestarts(T_0=10) cycle: lr at its minimum
    lrs = [lr_at(e, hp) for e in range(60, 70)]
    assert lr_at(69, hp) == min(lrs) and lr_at(70, hp) == pytest.approx(hp.lr)
    assert lr_at(69, hp) == pytest.approx(1e-3 + 0.5 * (0.02 - 1e-3) * (1 + math.cos(math.pi * 0.9)))


def _trial(tmp_path, method="car", out="a", **hp):
    return TrialConfig(method=method, dataset="digits", noise="symmetric", rate=0.5, seed=1, epochs=4,
                       subset=20, preset="mini", hparams={"batch_size": 32, **hp}, out_dir=str(tmp_path / out))


def test_trial_updates_targets_on_schedule_and_writes_the_flag(tmp_path):
    r = run_trial(_trial(tmp_path, es=3, update_every=2))  # 1-based epoch 4 only
    assert r["status"] == "ok", r["error"]
    assert [h["targets_updated"] for h in r["history"]] == [False, False, False, True]
    assert [h["relabelled"] for h in r["history"]][:3] == [0.0, 0.0, 0.0]
    assert r["method_flags"]["reconstructed"] is True
    assert 0.0 <= r["history"][-1]["mean_tau"] <= 1.0


def test_predict_ignores_the_confidence_branch(tmp_path):
    from lnlbench.contract import MethodContext, TrainSet
    from lnlbench.datasets.augment import Augmenter

    x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    ctx = MethodContext(train=TrainSet(x, torch.arange(8) % 3), num_classes=3, image_shape=(1, 8, 8),
                        device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.5,), 0, False, torch.device("cpu")))
    method = CAR(build_hparams(CARHparams, {"model": "mlp"}), ctx)
    xn = ctx.normalize(x)
    before = method.predict(xn)
    with torch.no_grad():
        method.net.aux.weight.fill_(123.0)
        method.net.aux.bias.fill_(-7.0)
    torch.testing.assert_close(method.predict(xn), before)
    torch.testing.assert_close(before, method.net.backbone(xn))


def test_backbone_without_features_is_a_one_line_error():
    with pytest.raises(LnlError, match="forward_features.*use one of .*mlp") as err:
        require_features(nn.Linear(3, 2), "car", "plain_linear")
    assert "\n" not in str(err.value)


def test_car_aux_is_beta_point_one_and_car_is_flagged():
    assert CAR.reconstructed and "MacLLL/NAL" in CAR.reconstruction
    assert all(as_recipe(e).hparams["beta"] == 0.1 for table in CARAux.PRESETS.values() for e in table.values())
    assert as_recipe(CARAux.PRESETS["mini"]["cifar10"]).protocol == as_recipe(CAR.PRESETS["mini"]["cifar10"]).protocol
    assert confidence(torch.tensor([-1e4, 1e4])).min() > 0


def test_reconstruction_reaches_the_table_footnote(tmp_path):
    from lnlbench.aggregate.frame import load_runs
    from lnlbench.aggregate.leaderboard import board_footnotes, build_leaderboard

    r = run_trial(_trial(tmp_path, epochs=1))
    assert r["method_flags"]["reconstruction"] == CAR.reconstruction
    frame = load_runs([str(tmp_path)])
    board = build_leaderboard(frame.trials, frame.skipped, metric="last")
    notes = " ".join(board_footnotes(board))
    assert "R: implementation reconstructed" in notes
    assert "R (CAR): reconstructed from MacLLL/NAL; the paper's equations were not verified" in notes


def test_detector_keeps_its_ranks_where_float32_tau_rounds_to_one():
    """τ = sigmoid(c) is 1.0 in float32 for every c > 17; the clean probability the harness scores keeps
    the order of the confidence logits, so the AUC is not blinded by ties."""
    import numpy as np

    from lnlbench.metrics import score_selection

    logits = torch.tensor([18.0, 20.0, 25.0, 30.0])
    assert torch.sigmoid(logits).unique().numel() == 1  # all 1.0 in float32
    probs = torch.sigmoid(logits.double())
    assert probs.unique().numel() == 4
    is_noisy = np.array([True, True, False, False])  # the clean ones have the larger logits
    assert score_selection(probs, is_noisy)["auc"] == 1.0
