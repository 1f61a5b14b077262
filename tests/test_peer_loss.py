"""Peer loss: the stable CE and the peer term by hand, the α plan (pieces, stretching), lr / (1 + α), the
independent peer draws, the momentum restart, and the recipes."""
from __future__ import annotations

import math

import pytest
import torch

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams
from lnlbench.methods import peer_loss as pl


def test_stable_ce_by_hand():
    z = torch.tensor([[0.0, math.log(3.0)]])  # p = (0.25, 0.75)
    assert pl.stable_ce(z, torch.tensor([1])).item() == pytest.approx(-math.log(0.75 + 1e-5), abs=1e-6)
    assert pl.stable_ce(torch.tensor([[0.0, -80.0]]), torch.tensor([1])).item() == pytest.approx(
        -math.log(1e-5), abs=1e-4)  # bounded by −log eps = 11.51 where plain CE would be 80


def test_peer_term_is_the_ce_of_independently_paired_images_and_labels():
    z = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])  # p = (.25, .75), (.75, .25)
    y = torch.tensor([1, 0])
    peer_z = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # f(x_{n1}): p = (.5, .5), (.25, .75)
    peer_y = torch.tensor([1, 0])  # y_{n2}, drawn apart from the images
    loss, ce, peer = pl.peer_loss(z, y, peer_z, peer_y, alpha=2.0)
    ce_hand = -math.log(0.75 + 1e-5)  # both samples have p_y = 0.75
    peer_hand = -(math.log(0.5 + 1e-5) + math.log(0.25 + 1e-5)) / 2  # (0.693 + 1.386) / 2
    assert ce.item() == pytest.approx(ce_hand, abs=1e-6) and peer.item() == pytest.approx(peer_hand, abs=1e-6)
    assert loss.item() == pytest.approx(ce_hand - 2.0 * peer_hand, abs=1e-6)


def test_alpha_plan_follows_the_linspace_pieces_and_stretches():
    plan = pl.CIFAR10_UNIFORM  # runner.py's f_alpha: 340 entries, of which its 300 epochs use the first 300
    assert sum(n for n, _, _ in plan) == 340
    assert [pl.alpha_at(e, 300, plan, 300) for e in (0, 19, 20, 39, 40, 89, 90, 239, 240)] == pytest.approx(
        [0.0, 0.0, 0.0, 0.1, 1.0, 2.0, 2.0, 3.3, 3.3])
    assert pl.alpha_at(299, 300, plan, 300) == pytest.approx(3.3 + 1.7 * 59 / 99)  # never reaches 5
    assert pl.alpha_at(30, 300, plan, 300) == pytest.approx(0.1 * 10 / 19)  # np.linspace(0, 0.1, 20)[10]
    assert pl.alpha_at(10, 100, plan, 300) == pl.alpha_at(30, 300, plan, 300)  # 100 epochs: stretched 3×
    assert pl.alpha_at(100, 250, pl.CIFAR100_UNIFORM, 250) == 0.95
    assert pl.alpha_at(99, 250, pl.CIFAR100_UNIFORM, 250) == 0.0
    assert pl.alpha_at(500, 250, pl.CIFAR100_UNIFORM, 250) == 0.95  # past the end: the last value


def _method(n: int = 64, **hp) -> pl.PeerLoss:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 4, (n,), generator=g))
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 0, False, "cpu"))
    torch.manual_seed(0)
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": 16, "epochs": 4, "lr": 0.1,
          "schedule": "constant", "alpha_plan": ((1, 0.0, 0.0), (3, 1.0, 3.0)), "plan_epochs": 4, **hp}
    return pl.PeerLoss(build_hparams(pl.PeerLossHparams, hp), ctx)


def test_peer_batches_are_independent_draws_and_the_lr_is_divided():
    m = _method()
    seen = []
    real_batches = m.ctx.batches
    m.ctx.batches = lambda *a, **k: seen.append(list(real_batches(*a, **k))) or iter(seen[-1])
    logs = m.train_epoch(2)  # α = 2 (the second piece 1 → 3 at its middle)
    assert logs["alpha"] == 2.0 and m.current_lr() == pytest.approx(0.1 / 3)
    batch, peer_x, peer_y = (torch.cat(b) for b in seen)
    for a, b in ((batch, peer_x), (batch, peer_y), (peer_x, peer_y)):
        assert sorted(a.tolist()) == list(range(64)) and not torch.equal(a, b)  # three permutations
    ce, peer, loss = (float(logs[k]) for k in ("ce", "peer", "loss"))  # floats: pytest.approx of a 0-d tensor fails
    assert peer > 0 and loss == pytest.approx(ce - 2.0 * peer, abs=1e-5)


def test_warm_up_epoch_is_plain_ce_and_momentum_restarts_each_epoch():
    m = _method()
    logs = m.train_epoch(0)
    assert logs["alpha"] == 0 and logs["peer"] == 0 and logs["loss"] == pytest.approx(logs["ce"])
    assert m.optimizer.state  # momentum buffers after epoch 0 …
    before = {id(p): s["momentum_buffer"].clone() for p, s in m.optimizer.state.items()}
    m.ctx.step = lambda loss, opt: None  # no step: the epoch only resets
    m.train_epoch(1)
    assert not m.optimizer.state and before  # … are dropped at the next epoch (runner.py re-creates SGD)


def test_presets_follow_the_runners():
    hp = pl.PeerLossHparams()
    assert (hp.model, hp.epochs, hp.lr, hp.weight_decay, hp.milestones[:2], hp.batch_size) == \
        ("preact_resnet18", 300, 0.1, 1e-4, (40, 80), 128)
    c100 = pl.PRESETS["paper"]["cifar100"]
    assert (c100["epochs"], c100["milestones"], c100["weight_decay"], c100["alpha_plan"]) == \
        (250, (60, 100), 5e-4, pl.CIFAR100_UNIFORM)
    assert pl.PRESETS["paper"]["cifar10/pairflip"]["alpha_plan"] == pl.CIFAR10_SPARSE
    assert pl.PRESETS["mini"]["digits"]["alpha_plan"] == pl.MINI and max(e for _, _, e in pl.MINI) == 1.0
