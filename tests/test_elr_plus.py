"""What is unique to ELR+: targets from the PEER's EMA network, targets mixed like the inputs, the soft label
y ⊙ q (CIFAR-100), the ramps of λ and of the EMA decay."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lnlbench.components import sigmoid_rampup
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams
from lnlbench.methods import elr_plus as ep


def _method(n: int = 32, **hp) -> ep.ELRPlus:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 4, (n,), generator=g))
    # no crop, no flip: the augmented batch equals the normalised one, so targets can be recomputed
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 0, False, "cpu"))
    torch.manual_seed(0)
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": 8, "epochs": 2, "lr": 0.05,
          "ema_step": 10, **hp}
    return ep.ELRPlus(build_hparams(ep.ELRPlusHparams, hp), ctx)


def _probs(net, x):
    with torch.no_grad():
        return F.softmax(net(x), dim=1)


def test_targets_come_from_the_peers_ema_network():
    m = _method(beta=0.7)
    x = m.ctx.normalize(m.ctx.train.x)
    ema2_before = copy.deepcopy(m.ema2.model)
    m.train_epoch(0)
    # network 1 trains first, on targets from network 2's EMA as it was before this epoch…
    torch.testing.assert_close(m.targets1, 0.3 * _probs(ema2_before, x))
    # …then network 2 on targets from network 1's EMA, as network 1's pass left it
    torch.testing.assert_close(m.targets2, 0.3 * _probs(m.ema1.model, x))
    assert not torch.allclose(m.targets1, 0.3 * _probs(m.ema1.model, x))  # not its own EMA
    assert m.global_step == 4  # 32 / 8 steps of network 1; both networks used steps 1..4


def test_targets_are_mixed_with_the_inputs_lambda_and_permutation(monkeypatch):
    m = _method(batch_size=32, beta=0.7)
    seen = {}
    real_mixup, real_loss = ep.mixup, ep.elr_plus_loss

    def spy_mixup(*args, **kw):
        out = real_mixup(*args, **kw)
        seen.setdefault("mix", []).append(out)
        return out

    def spy_loss(logits, y_mix, q, coef, *args):
        seen.setdefault("q", []).append((q.clone(), y_mix.clone()))
        return real_loss(logits, y_mix, q, coef, *args)

    order = []
    real_batches = m.ctx.batches
    m.ctx.batches = lambda *a, **k: (order.append(i) or i for i in real_batches(*a, **k))
    monkeypatch.setattr(ep, "mixup", spy_mixup)
    monkeypatch.setattr(ep, "elr_plus_loss", spy_loss)
    m.train_epoch(0)
    (_, _, lam, perm), (q, y_mix) = seen["mix"][0], seen["q"][0]
    assert lam >= 0.5  # λ ← max(λ, 1 − λ)
    t = m.targets1[order[0]]
    torch.testing.assert_close(q, lam * t + (1 - lam) * t[perm])
    onehot = F.one_hot(m.ctx.train.y[order[0]], 4).float()
    torch.testing.assert_close(y_mix, lam * onehot + (1 - lam) * onehot[perm])


def test_elr_plus_loss_on_a_hand_worked_example():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]))
    y = torch.tensor([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0]])  # a mixed one-hot and a plain one
    q = torch.tensor([[0.6, 0.2, 0.2], [0.2, 0.5, 0.3]])
    loss, reg = ep.elr_plus_loss(logits, y, q, coef=3.0)
    ce = (-(0.8 * math.log(0.5) + 0.2 * math.log(0.3)) - math.log(0.6)) / 2
    # ⟨q, p⟩ = 0.30 + 0.06 + 0.04 = 0.40 and 0.02 + 0.30 + 0.09 = 0.41
    want_reg = (math.log(1 - 0.40) + math.log(1 - 0.41)) / 2
    assert float(reg) == pytest.approx(want_reg, rel=1e-6)
    assert float(loss) == pytest.approx(ce + 3.0 * want_reg, rel=1e-6)
    # CIFAR-100: the CE's soft label is y ⊙ q renormalised: (0.48, 0.04, 0)/0.52 and (0, 1, 0)
    loss100, _ = ep.elr_plus_loss(logits, y, q, coef=3.0, label_times_target=True)
    ce100 = (-(0.48 * math.log(0.5) + 0.04 * math.log(0.3)) / 0.52 - math.log(0.6)) / 2
    assert float(loss100) == pytest.approx(ce100 + 3.0 * want_reg, rel=1e-6)


def test_coefficient_and_ema_decay_ramps(monkeypatch):
    hp = ep.ELRPlusHparams(ema_alpha=0.997, ema_update=True, ema_step=40000)
    for s in (1, 100, 20000, 40000, 90000):  # trainer.py: sigmoid_rampup(global_step + 1, ema_step)·α
        ramp = math.exp(-5 * (1 - min(s + 1, 40000) / 40000) ** 2)
        assert ep.ema_decay(s, hp) == pytest.approx(ramp * 0.997)
    plain = ep.ELRPlusHparams(ema_alpha=0.999, ema_update=False)
    assert [ep.ema_decay(s, plain) for s in (1, 3, 10_000)] == pytest.approx([0.5, 0.75, 0.999])
    assert sigmoid_rampup(5, 0) == 1.0  # coef_step 0 (CIFAR-10): no ramp of λ
    m = _method(coef_step=1000, lam=7.0)
    coefs = []
    real = ep.elr_plus_loss
    monkeypatch.setattr(ep, "elr_plus_loss",
                        lambda lg, y, q, coef, *a: coefs.append(coef) or real(lg, y, q, coef, *a))
    m.train_epoch(0)
    want = [7.0 * sigmoid_rampup(s, 1000) for s in (1, 2, 3, 4)] * 2  # both networks use global steps 1..4
    assert coefs == pytest.approx(want)


def test_prediction_is_the_sum_of_both_networks():
    m = _method()
    x = m.ctx.normalize(m.ctx.train.x[:5])
    with torch.no_grad():
        want = m.net1(x) + m.net2(x)
    torch.testing.assert_close(m.predict(x), want)
    assert m.clean_probability() is None
