"""What is unique to ELR: the target update t ← βt + (1−β)p̂ (clamped, renormalised), the loss on a
hand-worked example, and the warm-restart cosine schedule of its CIFAR-10 recipe."""
from __future__ import annotations

import math

import pytest
import torch

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams
from lnlbench.methods import elr


def test_elr_loss_on_a_hand_worked_example():
    # row 0: p = (0.5, 0.3, 0.2), old target (0.2, 0.2, 0.6), label 0
    # row 1: p ≈ (1, 9e-14, 9e-14) is clamped to (1 − 1e-4, 1e-4, 1e-4) and renormalised; zero target; label 1
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2)], [30.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1])
    targets = torch.tensor([[0.2, 0.2, 0.6], [0.0, 0.0, 0.0], [0.1, 0.1, 0.8]])
    loss, reg = elr.elr_loss(logits, labels, targets, torch.tensor([0, 1]), beta=0.7, lam=3.0)

    # t0 = 0.7·(0.2, 0.2, 0.6) + 0.3·(0.5, 0.3, 0.2) = (0.29, 0.23, 0.48); ⟨t0, p0⟩ = 0.31
    torch.testing.assert_close(targets[0], torch.tensor([0.29, 0.23, 0.48]))
    # t1 = 0.3·(0.9999, 1e-4, 1e-4)/1.0001; ⟨t1, p̂1⟩ = 0.3·(0.9999² + 2e-8)/1.0001
    torch.testing.assert_close(targets[1], 0.3 * torch.tensor([0.9999, 1e-4, 1e-4]) / 1.0001)
    torch.testing.assert_close(targets[2], torch.tensor([0.1, 0.1, 0.8]))  # not in the batch: untouched
    inner1 = 0.3 * (0.9999 ** 2 + 2e-8) / 1.0001
    want_reg = (math.log(1 - 0.31) + math.log(1 - inner1)) / 2
    ce1 = 30.0 + math.log(1 + 2 * math.exp(-30.0))  # −log softmax(30, 0, 0)[1]
    want = (-math.log(0.5) + ce1) / 2 + 3.0 * want_reg
    assert float(reg) == pytest.approx(want_reg, rel=1e-5)
    assert float(loss) == pytest.approx(want, rel=1e-5)


def test_regulariser_gradient_pulls_towards_the_target():
    logits = torch.zeros(1, 3, requires_grad=True)
    targets = torch.tensor([[0.0, 0.9, 0.1]])
    loss, _ = elr.elr_loss(logits, torch.tensor([0]), targets, torch.tensor([0]), beta=1.0, lam=1.0)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0]))
    (loss - ce).backward()  # the regulariser alone
    assert logits.grad[0, 1] < 0 < logits.grad[0, 0]  # descending raises the target class, not the label


def _method(n: int = 48, **hp) -> elr.ELR:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 4, (n,), generator=g))
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 1, False, "cpu"))
    torch.manual_seed(0)
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": 16, "epochs": 3, **hp}
    return elr.ELR(build_hparams(elr.ELRHparams, hp), ctx)


def test_targets_are_a_running_average_of_predictions_over_epochs():
    m = _method(beta=0.7, lr=0.0)  # lr 0: the network (so p̂) stays fixed, only the targets move
    with torch.no_grad():
        m.model.eval()
        p = torch.softmax(m.model(m.ctx.normalize(m.ctx.train.x)), 1).clamp(1e-4, 1 - 1e-4)
    p = p / p.sum(1, keepdim=True)
    for k in range(1, 4):  # each sample is visited once per epoch: t = (1 − β^k)·p̂
        m.train_epoch(k - 1)
        assert torch.allclose(m.targets.sum(1), torch.full((48,), 1 - 0.7 ** k), atol=1e-6)
    # the crop of 1 pixel changes the inputs, so compare the mass only loosely with the eval prediction
    assert (m.targets / m.targets.sum(1, keepdim=True) - p).abs().max() < 0.2


def test_cosine_warm_restarts_match_torch_stepped_per_epoch():
    hp = elr.ELRHparams(lr=0.02, eta_min=0.001, restart_period=10)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, eta_min=0.001)
    for epoch in range(35):
        assert elr.elr_lr(epoch, hp) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()
    step = elr.ELRHparams(schedule="step", milestones=(80, 120), gamma=0.01, lr=0.02)
    assert elr.elr_lr(79, step) == 0.02 and elr.elr_lr(80, step) == pytest.approx(2e-4)


def test_presets_follow_the_official_configs():
    p = elr.PRESETS["paper"]
    assert (p["cifar10"]["beta"], p["cifar10"]["lam"], p["cifar10"]["epochs"]) == (0.7, 3.0, 150)
    assert (p["cifar10/asymmetric"]["beta"], p["cifar10/asymmetric"]["lam"]) == (0.9, 1.0)
    assert (p["cifar100"]["beta"], p["cifar100"]["lam"], p["cifar100"]["milestones"]) == (0.9, 7.0, (80, 120))
    assert all(v["weight_decay"] == 1e-3 and v["lr"] == 0.02 for v in p.values())
