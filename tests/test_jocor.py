"""JoCoR: the joint loss with the co-regularisation weight λ by hand, the small-loss selection on it, one
optimiser for both networks, and the recipes."""
from __future__ import annotations

import math

import pytest
import torch

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams
from lnlbench.methods import jocor as jc

# p₁ = softmax(0, ln 3) = (0.25, 0.75), p₂ = softmax(0, 0) = (0.5, 0.5), label 1
L1, L2, Y = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]]), torch.tensor([1])
CE1, CE2 = -math.log(0.75), math.log(2.0)  # 0.287682, 0.693147
KL21 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(p₂‖p₁) = 0.143841
KL12 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # KL(p₁‖p₂) = 0.130812


def test_symmetric_kl_by_hand():
    assert jc.symmetric_kl(L1, L2).item() == pytest.approx(KL21 + KL12, abs=1e-6)
    assert jc.symmetric_kl(L1, L2).item() == pytest.approx(0.274653, abs=1e-6)
    assert jc.symmetric_kl(L1, L1).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.9, 1.0])
def test_joint_loss_weighs_ce_and_co_regularisation_by_lambda(lam):
    expected = (1 - lam) * (CE1 + CE2) + lam * (KL21 + KL12)
    assert jc.joint_loss(L1, L2, Y, lam).item() == pytest.approx(expected, abs=1e-6)
    if lam == 0.9:
        assert expected == pytest.approx(0.345271, abs=1e-6)


def test_co_regularisation_reaches_both_networks():
    a, b = L1.clone().requires_grad_(), L2.clone().requires_grad_()
    jc.joint_loss(a, b, Y, 1.0).sum().backward()  # the KL alone: each side gets a gradient (no detach)
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_selection_keeps_the_smallest_joint_losses_and_averages_them():
    joint = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7], requires_grad=True)
    loss, keep = jc.small_joint_loss(joint, rate=0.4)  # int(0.6 · 5) = 3 kept
    assert keep.tolist() == [False, True, True, True, False]
    assert loss.item() == pytest.approx((0.1 + 0.5 + 0.3) / 3)
    loss.backward()
    torch.testing.assert_close(joint.grad, keep.float() / 3)  # the dropped samples get no gradient


def _method(n: int = 32, **hp) -> jc.JoCoR:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 4, (n,), generator=g))
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 0, False, "cpu"), noise_rate_hint=0.5)
    torch.manual_seed(0)
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": n, "epochs": 12, "num_gradual": 1,
          "forget_rate": 0.5, **hp}
    return jc.JoCoR(build_hparams(jc.JoCoRHparams, hp), ctx)


def test_one_step_of_one_optimiser_on_the_kept_joint_loss():
    m = _method()
    params = list(m.net1.parameters()) + list(m.net2.parameters())
    assert [p for group in m.optimizer.param_groups for p in group["params"]] == params
    recorded = []
    m.ctx.step = lambda loss, opt: recorded.append((loss.detach(), opt))  # inspect only
    with torch.no_grad():
        x = m.ctx.normalize(m.ctx.train.x)
        joint = jc.joint_loss(m.net1(x), m.net2(x), m.ctx.train.y, 0.9)
    logs = m.train_epoch(3)
    (loss, opt), = recorded  # one batch, one step, one optimiser
    assert opt is m.optimizer and logs["forget_rate"] == 0.5
    keep = torch.zeros(32)
    keep[torch.argsort(joint)[:16]] = 1.0
    torch.testing.assert_close(loss, (joint * keep).sum() / 16)
    torch.testing.assert_close(m.clean_probability(), keep)


def test_presets_follow_the_official_code_and_readme():
    hp = jc.JoCoRHparams()
    assert (hp.model, hp.epochs, hp.lr, hp.epoch_decay_start, hp.num_gradual, hp.co_lambda) == \
        ("cotplus_cnn", 199, 0.001, 80, 10, 0.9)
    c100 = jc.PRESETS["paper"]["cifar100"]
    assert (c100.hparams["epoch_decay_start"], c100.hparams["co_lambda"]) == (100, 0.85)
    assert c100.protocol.augment is False
