"""What is unique to DISC: the instance thresholds (EMA of each sample's max confidence, from 1/N), the clean /
hard / purified division by hand, the weak labels it keeps, the official per-setting recipe branches and Adam
plan, and the loss's set weighting (CE on C, GCE on H, each scaled by |set|/B)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams, preset_overrides
from lnlbench.methods import disc


def test_thresholds_are_an_ema_of_the_max_confidence():
    tau = torch.full((2,), 0.5)
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    disc.update_thresholds(tau, probs, 0.9)
    torch.testing.assert_close(tau, torch.tensor([0.9 * 0.5 + 0.1 * 0.9, 0.9 * 0.5 + 0.1 * 0.7]))
    for _ in range(200):  # a sample whose confidence stays put: its threshold converges to it
        disc.update_thresholds(tau, probs, 0.9)
    torch.testing.assert_close(tau, torch.tensor([0.9, 0.7]), atol=1e-6, rtol=0)


def test_division_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1])
    w = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05], [0.5, 0.5]])
    s = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.97, 0.03], [0.5, 0.5]])
    tau = torch.full((5,), 0.5)
    sets = disc.divide(w, s, labels, tau, tau.clone(), sigma=0.4)
    # 0: both views above τ on the label → clean; 1: weak only, 2: strong only → hard;
    # 3: label 1 at 0.05/0.03, mean max 0.96 > min(0.5 + 0.4, 0.99) → purified to class 0; 4: nothing
    assert sets["clean"].tolist() == [True, False, False, False, False]
    assert sets["hard"].tolist() == [False, True, True, False, False]
    assert sets["purified"].tolist() == [False, False, False, True, False]
    assert sets["weak"].tolist() == [True, True, True, True, False]
    assert sets["weak_labels"].tolist() == [0, 0, 0, 0, 1]
    high = disc.divide(w, s, labels, torch.full((5,), 0.7), torch.full((5,), 0.7), sigma=0.5)
    assert not bool(high["purified"][3])  # the bar is capped at 0.99 and 0.96 is below it


def test_recipe_branches_follow_the_official_code():
    def cell(ds, noise, rate):
        return preset_overrides(disc.PRESETS, "paper", ds, noise, rate)
    assert "ema_momentum" not in cell("cifar10", "symmetric", 0.5)  # the default λ 0.99
    c = cell("cifar10", "symmetric", 0.8)
    assert c["optimizer"] == "adam" and c["lr"] == 0.001 and c["lambda_h"] == 0.2 and c["ema_momentum"] == 0.95
    c = cell("cifar100", "symmetric", 0.6)
    assert c.get("optimizer", "sgd") == "sgd"
    assert c["lambda_h"] == 0.2 and c["lr"] == 0.1
    assert cell("cifar10", "asymmetric", 0.4)["ema_momentum"] == 0.95
    c = cell("cifar100", "instance", 0.4)
    assert c["model"] == "resnet34" and c["start_epoch"] == 15
    hp = build_hparams(disc.DISCHparams, cell("cifar10", "symmetric", 0.2))
    assert (hp.ema_momentum, hp.lambda_h, hp.optimizer, hp.momentum, hp.milestones) == (0.99, 1.0, "sgd", 0.0, (80, 160))


def test_adam_plan_is_set_after_the_epoch_before():
    hp = build_hparams(disc.DISCHparams, {"optimizer": "adam", "lr": 0.001, "epochs": 200, "epoch_decay_start": 120})
    assert disc.adam_plan(0, hp) == (0.001, 0.9) and disc.adam_plan(120, hp) == (0.001, 0.9)
    assert disc.adam_plan(121, hp) == (pytest.approx(0.001), 0.1)  # plan[120] = 80/80·lr, β₁ 0.1
    assert disc.adam_plan(161, hp)[0] == pytest.approx(0.001 * 40 / 80)


def _method(**hp) -> disc.DISC:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 3, (24,), generator=g))
    ctx = MethodContext(train=train, num_classes=3, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 1, True, "cpu"))
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": 8, "epochs": 3, "lr": 0.05, **hp}
    return disc.DISC(build_hparams(disc.DISCHparams, hp), ctx)


def test_loss_weights_each_set_by_its_share_of_the_batch():
    m = _method(alpha=0.0, lambda_ce=1.0, lambda_h=0.2)  # α 0: mixup is plain CE on the weak set
    idx = torch.arange(8)
    m.clean[:3] = True
    m.hard[3:5] = True
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    x = torch.zeros(8, 1, 8, 8)
    y = m.ctx.train.y[idx]
    loss, any_set = m._batch_loss(idx, x, x, z[:8], z[8:], main=True)
    ce = F.cross_entropy(z[:8], y, reduction="none") + F.cross_entropy(z[8:], y, reduction="none")
    g = disc.gce(z[:8], y, 0.7) + disc.gce(z[8:], y, 0.7)
    with torch.no_grad():
        mix_logits = m.model(x[:5])
    mixup = 2 * F.cross_entropy(mix_logits, m.weak_labels[:5])
    want = ce[:3].sum() / 8 + 0.2 * g[3:5].sum() / 8 + mixup
    assert any_set and float(loss.detach()) == pytest.approx(float(want), rel=1e-5)
    m.clean[:] = m.hard[:] = False
    assert m._batch_loss(idx, x, x, z[:8], z[8:], main=True)[1] is False  # no set: the step is skipped


def test_epochs_divide_and_move_the_thresholds():
    m = _method(start_epoch=1)
    assert m.clean_probability() is None
    rec = m.train_epoch(0)
    assert rec["phase"] == "warmup" and m.divisions == 1
    # thresholds started at 1/N, so after the first epoch nearly every label beats them in both views
    assert float(rec["clean_fraction"]) > 0.5
    assert float(m.tau_w.min()) > 1 / 24
    rec = m.train_epoch(1)
    assert rec["phase"] == "disc" and m.clean_probability().shape == (24,)
    assert set(m.selection_sets()) == {"selected"}


def test_strong_view_is_randaugment_unless_the_protocol_does_not_augment():
    m = _method()
    x = m.ctx.train.x[:8]
    assert not torch.allclose(m.strong(x), m.ctx.normalize(x))
    plain = _method()
    plain.ctx._augmenter = Augmenter.build((0.5,), (0.25,), 0, False, "cpu")  # an augment: false protocol
    torch.testing.assert_close(plain.strong(x), plain.ctx.normalize(x))
