"""Co-teaching+: the disagreement set, small-loss selection inside it, the no-disagreement fallback, the
switch (init) epoch, the CE-of-softmax loss of the reference, and the recipes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lnlbench.components.cotrain import disagreement_mask, estimate_forget_rate, small_loss_exchange
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams
from lnlbench.methods import coteaching_plus as cp


def test_disagreement_mask_compares_the_argmax_predictions():
    l1 = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    l2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    assert disagreement_mask(l1, l2).tolist() == [False, True, True]


def test_small_loss_selection_runs_inside_the_disagreement_set_and_is_exchanged():
    ce1 = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3, 0.05])
    ce2 = torch.tensor([0.8, 0.1, 0.7, 0.2, 0.6, 0.01])
    disagree = torch.tensor([True, True, True, True, False, False])  # |D| = 4; samples 4, 5 are agreed on
    loss1, loss2, keep1, keep2 = cp.disagreement_exchange(ce1, ce2, disagree, rate=0.5, fallback=True)
    # int(0.5 · 4) = 2 per network, chosen within D only (sample 5 has the smallest loss, but is agreed on)
    assert keep1.tolist() == [True, False, True, False, False, False]  # ce1 in D: 0.1, 0.2 smallest
    assert keep2.tolist() == [False, True, False, True, False, False]  # ce2 in D: 0.1, 0.2 smallest
    assert loss1.item() == pytest.approx((0.5 + 0.9) / 2)  # net 1 learns from net 2's choice
    assert loss2.item() == pytest.approx((0.8 + 0.7) / 2)


def test_a_tiny_disagreement_set_is_kept_whole():
    ce1, ce2 = torch.tensor([0.4, 0.1, 0.2]), torch.tensor([0.3, 0.2, 0.1])
    disagree = torch.tensor([True, False, False])  # int(0.5 · 1) = 0 → the whole set (loss.py)
    loss1, loss2, keep1, keep2 = cp.disagreement_exchange(ce1, ce2, disagree, rate=0.5, fallback=True)
    assert keep1.tolist() == keep2.tolist() == [True, False, False]
    assert (loss1.item(), loss2.item()) == pytest.approx((0.4, 0.3))


def test_no_disagreement_trains_on_the_batch_only_before_the_fallback_steps():
    ce1, ce2 = torch.tensor([0.4, 0.1, 0.2]), torch.tensor([0.3, 0.2, 0.1])
    none = torch.zeros(3, dtype=torch.bool)
    loss1, loss2, keep1, _ = cp.disagreement_exchange(ce1, ce2, none, rate=0.5, fallback=True)
    assert (loss1.item(), loss2.item()) == pytest.approx((ce1.mean().item(), ce2.mean().item()))
    assert keep1.all()
    loss1, loss2, keep1, keep2 = cp.disagreement_exchange(ce1, ce2, none, rate=0.5, fallback=False)
    assert loss1.item() == loss2.item() == 0.0 and not keep1.any() and not keep2.any()


def test_shared_coteaching_exchange_and_tau_estimate_edge_cases():
    ce1, ce2 = torch.tensor([0.4, 0.1]), torch.tensor([0.3, 0.2])
    loss1, _, keep1, _ = small_loss_exchange(ce1, ce2, rate=0.9)  # int(0.1 · 2) = 0 kept: zero loss
    assert loss1.item() == 0.0 and not keep1.any()
    loss1, _, keep1, _ = small_loss_exchange(ce1, ce2, rate=0.9, all_if_none=True)
    assert keep1.all() and loss1.item() == pytest.approx(0.25)  # mean of ce1 over all
    assert estimate_forget_rate(torch.tensor([float("nan"), 1.0]), seed=0) is None


def test_the_switch_epoch_follows_the_official_index():
    # main.py: `if epoch < init_epoch: loss_coteaching` with its epoch = ours + 1 (CIFAR-10: init_epoch 20)
    assert not cp.in_disagreement_phase(18, 20) and cp.in_disagreement_phase(19, 20)
    assert cp.in_disagreement_phase(0, 0) and cp.in_disagreement_phase(0, 1)


def _method(n: int = 32, **hp) -> cp.CoteachingPlus:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 4, (n,), generator=g))
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 0, False, "cpu"), noise_rate_hint=0.5)
    torch.manual_seed(0)
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": n, "epochs": 12, "num_gradual": 1,
          "forget_rate": 0.5, **hp}
    return cp.CoteachingPlus(build_hparams(cp.CoteachingPlusHparams, hp), ctx)


@pytest.mark.parametrize("loss_on", ["softmax", "logits"])
def test_each_network_learns_from_its_peers_choice_in_the_disagreement_set(loss_on):
    m = _method(init_epoch=3, loss_on=loss_on, model_kwargs={"hidden": [64]})
    recorded = {}
    m.ctx.step = lambda loss, opt: recorded.__setitem__(id(opt), loss.detach())  # no update: inspect only
    with torch.no_grad():
        x = m.ctx.normalize(m.ctx.train.x)
        z1, z2 = m.net1(x), m.net2(x)
    y = m.ctx.train.y
    assert m.train_epoch(1)["phase"] == "coteaching"  # official epoch 2 < init_epoch 3
    logs = m.train_epoch(2)
    assert logs["phase"] == "coteaching+"
    disagree = disagreement_mask(z1, z2)
    assert 2 <= int(disagree.sum()) < 32, "the nets must partly disagree for the test to bite"
    assert logs["disagreement"] == pytest.approx(disagree.float().mean().item())
    p1, p2 = (z1.softmax(1), z2.softmax(1)) if loss_on == "softmax" else (z1, z2)
    ce1, ce2 = F.cross_entropy(p1, y, reduction="none"), F.cross_entropy(p2, y, reduction="none")
    loss1, loss2, keep1, keep2 = cp.disagreement_exchange(ce1, ce2, disagree, 0.5, fallback=True)
    torch.testing.assert_close(recorded[id(m.optimizer1)], loss1)
    torch.testing.assert_close(recorded[id(m.optimizer2)], loss2)
    assert (m.clean_probability()[~disagree] == 0).all()  # only disagreement samples can be kept
    torch.testing.assert_close(m.clean_probability(), (keep1.float() + keep2.float()) / 2)


def test_presets_follow_the_official_main_py():
    hp = cp.CoteachingPlusHparams()
    assert (hp.model, hp.epochs, hp.lr, hp.epoch_decay_start, hp.num_gradual, hp.init_epoch) == \
        ("lenet", 199, 0.001, 80, 10, 20)
    c100 = cp.PRESETS["paper"]["cifar100"]
    assert c100.hparams["model"] == "cotplus_cnn" and c100.hparams["init_epoch"] == 5
    assert c100.protocol.augment is False and cp.PRESETS["mini"]["digits"].protocol.augment is True
