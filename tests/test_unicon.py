"""What is unique to UNICON: the JSD per sample, the selection rate, the uniform per-class selection, the
refinement weights, SimCLR's loss on the projection head, the periodic cosine lr and the epoch's shape."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from toy_ctx import TOY_HP, toy_context

from lnlbench.components.projection import ProjectionNet, simclr_loss
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams, preset_overrides
from lnlbench.methods import unicon as uc
from lnlbench.registry import MODELS


def _method(n: int = 96, **hp) -> uc.UNICON:
    ctx = toy_context(n)
    return uc.UNICON(build_hparams(uc.UNICONHparams, {**TOY_HP, "proj_dim": 8, **hp}), ctx)


def test_jsd_per_sample_by_hand():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    # p = (½, ½), e_0: m = (¾, ¼); KL(p‖m) = ½ ln(⅔) + ½ ln 2, KL(e_0‖m) = ln(4/3)
    by_hand = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2.0)) + 0.5 * math.log(4 / 3)
    got = uc.jsd_to_labels(probs, y)
    assert abs(float(got[0]) - by_hand) < 1e-5 and abs(by_hand - 0.215762) < 1e-6
    assert float(got[1]) < 1e-6  # prediction = label
    assert abs(float(got[2]) - math.log(2)) < 1e-5  # disjoint: the maximum, ln 2 (< d_u = 0.7)


def test_selection_rate_is_the_fraction_below_the_mean_lowered_above_d_u():
    jsd = torch.tensor([0.1, 0.2, 0.3, 0.6, 0.65, 0.69])  # mean 0.4233
    assert uc.selection_rate(jsd, d_u=0.7, tau=5.0) == 3 / 6
    # with d_u below the mean: t = 0.4233 − (0.4233 − 0.1) / 1 = 0.1, nothing is below it
    assert uc.selection_rate(jsd, d_u=0.3, tau=1.0) == 0.0
    assert uc.selection_rate(jsd, d_u=0.3, tau=2.0) == 2 / 6  # t = 0.2617


def test_uniform_selection_takes_the_lowest_jsd_per_class():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 1, 0, 2])
    jsd = torch.tensor([0.5, 0.1, 0.3, 0.2, 0.6, 0.05, 0.4, 0.3, 0.2, 0.9, 0.7, 0.1])
    mask = uc.uniform_selection(jsd, y, 3, rate=0.5)  # quota int(0.5 · 12 / 3) = 2 per class
    assert mask.nonzero().squeeze(1).tolist() == [1, 3, 5, 7, 8, 11]
    mask = uc.uniform_selection(jsd, y, 3, rate=0.75)  # quota 3: class 2 has only 2, both taken
    assert sorted(mask.nonzero().squeeze(1).tolist()) == [1, 2, 3, 5, 6, 7, 8, 11]
    assert torch.bincount(y[mask], minlength=3).tolist() == [3, 3, 2]


def test_refinement_weights():
    assert torch.allclose(uc.refinement_weights(torch.tensor([0.2, 0.49, 0.5, 0.6])),
                          torch.tensor([1.0, 1.0, 0.5, 0.4]))


def _supcon_unsupervised(z1, z2, t):
    """SupConLoss without labels, step by step as Contrastive_loss.py computes it."""
    feats = torch.cat([z1, z2])
    logits = feats @ feats.T / t
    logits = logits - logits.max(1, keepdim=True).values
    n = len(feats)
    self_mask = 1 - torch.eye(n)
    pos = torch.eye(len(z1)).repeat(2, 2) * self_mask
    log_prob = logits - torch.log((torch.exp(logits) * self_mask).sum(1, keepdim=True))
    return -((pos * log_prob).sum(1) / pos.sum(1)).mean()


def test_simclr_loss_is_supcon_without_labels():
    z1, z2 = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    assert torch.allclose(simclr_loss(z1, z2, 0.05), _supcon_unsupervised(z1, z2, 0.05), atol=1e-4)
    assert simclr_loss(z1, z1, 0.05) < simclr_loss(z1, z2, 0.05)  # matching views: lower loss


def test_projection_head_with_batchnorm():
    net = ProjectionNet(MODELS.get("mlp")(4, in_channels=1, image_size=8), 8, batchnorm=True)
    assert isinstance(net.projection[1], torch.nn.BatchNorm1d)
    emb = net.embed(torch.randn(6, 1, 8, 8))
    assert emb.shape == (6, 8) and torch.allclose(emb.norm(dim=1), torch.ones(6))


def test_lr_is_the_periodic_cosine_of_t_max():
    hp = build_hparams(uc.UNICONHparams, {})
    assert uc.unicon_lr(0, hp) == 0.02 and abs(uc.unicon_lr(280, hp) - 2e-4) < 1e-12
    assert uc.unicon_lr(350, hp) > uc.unicon_lr(300, hp) > 2e-4  # rises again past T_max, as the official
    tiny = build_hparams(uc.UNICONHparams, preset_overrides(uc.PRESETS, "paper", "tiny_imagenet", "symmetric", 0.5))
    assert [uc.unicon_lr(e, tiny) for e in (198, 199, 399)] == [0.005, 0.005 * 0.1, 0.005 * 0.1 ** 2]


def test_epoch_divides_per_net_and_trains_each_on_its_uniform_labeled_set(monkeypatch):
    m = _method()
    assert "lx" not in m.train_epoch(0) and m.clean_probability() is None  # warm-up
    seen = []
    real = m.train_net
    monkeypatch.setattr(m, "train_net", lambda e, net, other, opt, mask, w, rate:
                        (seen.append((net, other, mask.clone(), rate)), real(e, net, other, opt, mask, w, rate))[1])
    rec = m.train_epoch(1)
    assert [(a, b) for a, b, _, _ in seen] == [(m.net1, m.net2), (m.net2, m.net1)]
    for _, _, mask, rate in seen:
        counts = torch.bincount(m.ctx.train.y[mask], minlength=4)
        assert (counts == int(rate * 96 / 4)).all()  # the same number per class
    assert torch.equal(m.clean_probability().bool(), seen[0][2])
    assert float(rec["lcon"]) > 0 and float(rec["lx"]) > 0


def test_presets():
    c100 = preset_overrides(uc.PRESETS, "paper", "cifar100", "asymmetric", 0.4)
    assert c100["warm_up"] == 30 and c100["penalty"] and c100["t_max"] == 280 and c100["epochs"] == 351
    assert preset_overrides(uc.PRESETS, "paper", "cifar10", "symmetric", 0.5)["lambda_u"] == 30.0


def test_unlabeled_batch_is_b_over_twice_the_selection_rate(monkeypatch):
    m = _method()
    m.train_epoch(0)
    rows = []
    real = uc.mixmatch
    monkeypatch.setattr(uc, "mixmatch", lambda inputs, *a: (rows.append(len(inputs[0])), real(inputs, *a))[1])
    mask, w, rate = m.divide()
    m.train_net(1, m.net1, m.net2, m.opt1, mask, w, rate)
    nu = min(int(16 / (2 * rate)), int((~mask).sum()))
    assert rows == [2 * 16 + 2 * nu] * (int(mask.sum()) // 16)  # full labeled batches of B (drop_last)


def test_strong_view_is_crop_flip_then_the_autoaugment_policy_on_rgb():
    from lnlbench.components.autoaugment import UNICON_POLICY, autoaugment_cifar10

    x = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ctx = MethodContext(train=TrainSet(x=x, y=torch.arange(8) % 4), num_classes=4, image_shape=(3, 8, 8),
                        device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,) * 3, (0.25,) * 3, 1, True, "cpu"))
    m = uc.UNICON(build_hparams(uc.UNICONHparams, {"model": "mlp", "proj_dim": 4}), ctx)
    state = ctx.aug_generator.get_state()
    got = m.strong(x)
    ctx.aug_generator.set_state(state)
    want = ctx.normalize(autoaugment_cifar10(ctx.crop_flip(x), ctx.aug_generator, UNICON_POLICY))
    assert torch.equal(got, want)
    weak = uc.UNICON(build_hparams(uc.UNICONHparams, {"model": "mlp", "proj_dim": 4, "strong_augment": "weak"}), ctx)
    ctx.aug_generator.set_state(state)
    got = weak.strong(x)
    ctx.aug_generator.set_state(state)
    assert torch.equal(got, ctx.augment(x))
