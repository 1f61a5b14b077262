"""What is unique to SOP: the over-parameterised noise term u²y − v²(1 − y), the adjusted prediction and the
loss on hand-worked numbers, the stop-gradient on v in the cross-entropy, the two learning rates of u and v
(one optimiser step moves each by its own lr), and SOP+'s two regularisers by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams
from lnlbench.methods import sop


def test_noise_terms_sit_on_and_off_the_label_and_are_clamped():
    onehot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    u = torch.tensor([[0.5], [2.0]])
    v = torch.tensor([[0.3, 0.4, 0.5], [1.5, 0.1, 0.0]])
    u_term, v_term = sop.noise_terms(u, v, onehot)
    torch.testing.assert_close(u_term, torch.tensor([[0.25, 0.0, 0.0], [0.0, 1.0, 0.0]]))  # 2² clamped to 1
    torch.testing.assert_close(v_term, torch.tensor([[0.0, 0.16, 0.25], [1.0, 0.0, 0.0]]))


def test_adjusted_prediction_and_loss_on_a_hand_worked_example():
    # p = softmax(z) = (0.5, 0.3, 0.2); label 1; U = 0.25 on class 1, V = 0.1 on class 0
    z = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    onehot = torch.tensor([[0.0, 1.0, 0.0]])
    u_term = torch.tensor([[0.0, 0.25, 0.0]])
    v_term = torch.tensor([[0.1, 0.0, 0.0]])
    pred = sop.adjusted_prediction(z, u_term, v_term)
    raw = torch.tensor([0.4, 0.55, 0.2])  # p + U − V, all above ε
    torch.testing.assert_close(pred[0], raw / raw.sum())
    loss, _ = sop.sop_loss(z, onehot, u_term, v_term)
    # hard prediction = class 0: ‖(1, 0, 0) + (−0.1, 0.25, 0) − (0, 1, 0)‖² = 0.81 + 0.5625
    want = -math.log(0.55 / 1.15) + 0.81 + 0.5625
    assert float(loss) == pytest.approx(want, rel=1e-6)


def test_prediction_is_floored_at_eps_before_and_after_normalising():
    z = torch.tensor([[20.0, 0.0]])  # p ≈ (1, 2e-9)
    pred = sop.adjusted_prediction(z, torch.zeros(1, 2), torch.tensor([[0.0, 0.5]]))
    assert float(pred[0, 1]) == pytest.approx(sop.EPS / (1 + sop.EPS), rel=1e-4)


def test_v_gets_no_gradient_through_the_cross_entropy_but_does_through_the_squared_term():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).requires_grad_()
    onehot = torch.tensor([[0.0, 1.0, 0.0]])
    u = torch.tensor([[0.5]], requires_grad=True)
    v = torch.tensor([[0.3, 0.2, 0.1]], requires_grad=True)
    u_term, v_term = sop.noise_terms(u, v, onehot)
    pred = sop.adjusted_prediction(z, u_term, v_term)
    (-(onehot * pred.log()).sum()).backward()
    assert v.grad is None or torch.count_nonzero(v.grad) == 0
    assert float(u.grad) < 0  # raising u adds mass to the label: the cross-entropy falls
    v.grad = None
    u_term, v_term = sop.noise_terms(u, v, onehot)
    loss, _ = sop.sop_loss(z.detach(), onehot, u_term, v_term)
    loss.backward()
    # d/dv_c ‖hard + U − V − y‖² = −2·(hard_c − V_c)·2v_c off the label; hard = class 0
    want = torch.tensor([-2 * (1 - 0.09) * 2 * 0.3, -2 * (0 - 0.01) * 0.0, -2 * (0 - 0.01) * 2 * 0.1])
    want[1] = 0.0  # on the label v has no term
    torch.testing.assert_close(v.grad[0], want)


def test_balance_and_consistency_by_hand():
    pred = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    avg = [0.4, 0.4, 0.2]
    assert float(sop.balance_loss(pred)) == pytest.approx(-sum(math.log(a) for a in avg) / 3, rel=1e-6)
    zw = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    zs = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]]))
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(sop.consistency_loss(zw, zs)) == pytest.approx(kl0 / 2, rel=1e-5)
    zs = zs.clone().requires_grad_()
    zw = zw.clone().requires_grad_()
    sop.consistency_loss(zw, zs).backward()
    assert zw.grad is None or torch.count_nonzero(zw.grad) == 0  # the weak view is the (stopped) target


def _method(n: int = 32, cls=sop.SOP, **hp) -> sop.SOPBase:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 4, (n,), generator=g))
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 1, False, "cpu"))
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": 8, "epochs": 3, **hp}
    return cls(build_hparams(cls.Hparams, hp), ctx)


def test_one_step_moves_u_and_v_by_their_own_learning_rates():
    m = _method(lr=0.1, lr_u=3.0, lr_v=70.0, weight_decay=5e-4, init_std=0.2)
    groups = m.optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.1, 3.0, 70.0]
    assert groups[1]["momentum"] == groups[2]["momentum"] == 0 and groups[1]["weight_decay"] == 0
    ctx = m.ctx
    idx = torch.arange(8)
    u0, v0 = m.noise.u.detach().clone(), m.noise.v.detach().clone()
    w0 = [p.detach().clone() for p in m.model.parameters()]
    onehot = F.one_hot(ctx.train.y[idx], 4).float()
    loss, _ = sop.sop_loss(m.model(ctx.normalize(ctx.train.x[idx])), onehot, *m.noise.terms(idx, onehot))
    ctx.step(loss, m.optimizer)
    gu, gv = m.noise.u.grad, m.noise.v.grad
    torch.testing.assert_close(m.noise.u.detach(), u0 - 3.0 * gu)
    torch.testing.assert_close(m.noise.v.detach(), v0 - 70.0 * gv)
    assert torch.count_nonzero(gu[8:]) == 0 and torch.count_nonzero(gv[8:]) == 0  # rows off the batch
    assert torch.count_nonzero(gu[:8]) > 0 and torch.count_nonzero(gv[:8]) > 0
    p, p0 = next(iter(m.model.parameters())), w0[0]
    torch.testing.assert_close(p.detach(), p0 - 0.1 * (p.grad + 5e-4 * p0))  # the network: lr 0.1 with decay


def test_the_schedule_moves_only_the_network_lr_and_u_stays_a_clean_score():
    m = _method(lr=0.1, lr_u=3.0, lr_v=7.0, schedule="cosine", eta_min=0.0, epochs=4)
    m.train_epoch(2)
    assert [g["lr"] for g in m.optimizer.param_groups] == [pytest.approx(0.05), 3.0, 7.0]
    cp = m.clean_probability()
    assert cp.shape == (32,) and bool(((0 <= cp) & (cp <= 1)).all())
    torch.testing.assert_close(cp, 1 - (m.noise.u.detach()[:, 0] ** 2).clamp(0, 1))


def test_state_round_trips_u_and_v():
    a, b = _method(), _method(init_std=0.5)
    a.train_epoch(0)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.noise.v, a.noise.v)
    torch.testing.assert_close(b.noise.u, a.noise.u)


def _rgb_method(augment: bool, **hp):
    from lnlbench.methods import sop_plus

    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 4, (16,), generator=g))
    aug = Augmenter.build((0.5,) * 3, (0.25,) * 3, 1 if augment else 0, augment, "cpu")
    ctx = MethodContext(train=train, num_classes=4, image_shape=(3, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=aug)
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": 8, "epochs": 2, **hp}
    return sop_plus.SOPPlus(build_hparams(sop_plus.SOPPlusHparams, hp), ctx)


def test_sop_plus_sees_a_weak_and_a_strong_view_and_logs_both_regularisers():
    m = _rgb_method(True)
    x = m.ctx.train.x[:8]
    views = m.views(x)
    assert views.shape == (16, 3, 8, 8)
    assert not torch.allclose(views[:8], views[8:])  # AutoAugment + Cutout on the second half
    assert bool((m.strong_view(x) == 0).flatten(1).any(1).all())  # every strong view has its Cutout hole
    rec = m.train_epoch(0)
    assert float(rec["consistency"]) > 0 and float(rec["balance"]) > 0
    plain = _rgb_method(False)  # a protocol without augmentation: the strong view is the plain one
    torch.testing.assert_close(plain.strong_view(x), plain.ctx.augment(x))


def test_sop_plus_loss_is_sop_plus_its_weighted_regularisers():
    m = _rgb_method(False, ratio_consistency=0.9, ratio_balance=0.1)
    idx = torch.arange(8)
    onehot = F.one_hot(m.ctx.train.y[idx], 4).float()
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    base, pred = sop.sop_loss(z[:8], onehot, *m.noise.terms(idx, onehot))
    total = base + 0.1 * sop.balance_loss(pred) + 0.9 * sop.consistency_loss(z[:8], z[8:])
    p_bar = pred.mean(0)
    kl = (F.softmax(z[:8], 1) * (F.log_softmax(z[:8], 1) - F.log_softmax(z[8:], 1))).sum(1).mean()
    torch.testing.assert_close(total, base - 0.1 * p_bar.log().mean() + 0.9 * kl)


def test_paper_presets_follow_the_config_and_the_readme():
    from lnlbench.hparams import preset_overrides
    from lnlbench.methods import sop_plus

    c100 = preset_overrides(sop_plus.PRESETS, "paper", "cifar100", "symmetric", 0.5)
    assert (c100["model"], c100["lr"], c100["weight_decay"], c100["epochs"], c100["eta_min"]) == (
        "preact_resnet18", 0.02, 1e-3, 300, 2e-4)
    assert (c100["lr_u"], c100["lr_v"], c100["ratio_consistency"], c100["ratio_balance"]) == (1.0, 10.0, 0.9, 0.1)
    asym = preset_overrides(sop_plus.PRESETS, "paper", "cifar100", "asymmetric", 0.4)
    assert (asym["lr_u"], asym["lr_v"]) == (0.1, 100.0)  # README: 0.1 in the code (1 in the paper)
    plain = preset_overrides(sop.PRESETS, "paper", "cifar10", "symmetric", 0.5)
    assert plain["model"] == "resnet34" and "ratio_consistency" not in plain
    hp = build_hparams(sop.SOPHparams, plain)
    assert hp.ratio_consistency == hp.ratio_balance == 0.0 and hp.schedule == "cosine"
