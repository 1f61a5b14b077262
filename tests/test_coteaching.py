"""What is unique to Co-teaching: the kept fraction follows R(T), the exchange, τ's source, the Adam plan."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnlbench.components import forget_rate_schedule
from lnlbench.config import TrialConfig, resolve
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.data import intended_flip_rate
from lnlbench.datasets.augment import Augmenter
from lnlbench.datasets.cifar import CIFAR10_CLASSES
from lnlbench.datasets.noise import asymmetric, symmetric
from lnlbench.engine import Trial
from lnlbench.errors import LnlError
from lnlbench.hparams import build_hparams
from lnlbench.methods import coteaching as ct
from lnlbench.types import NoiseInfo


def _method(n: int = 64, hint: float | None = 0.5, flip: float | None = None, **hp) -> ct.Coteaching:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.randint(0, 4, (n,), generator=g))
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 0, False, "cpu"), noise_rate_hint=hint,
                        flip_rate_hint=flip)
    torch.manual_seed(0)
    hp = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "batch_size": 16, "epochs": 12, **hp}
    return ct.Coteaching(build_hparams(ct.CoteachingHparams, hp), ctx)


def test_kept_fraction_follows_the_forget_rate_schedule():
    m = _method(forget_rate=0.4, num_gradual=4)
    for epoch in range(6):
        logs = m.train_epoch(epoch)
        rate = forget_rate_schedule(epoch + 1, 0.4, 4)  # the official loop's epoch index is ours + 1
        assert logs["forget_rate"] == pytest.approx(rate) and logs["tau"] == 0.4
        # every sample is in exactly one of the 4 batches of 16; each net keeps int((1 - R) * 16) per batch
        per_net = int((1 - rate) * 16)
        assert float(m.kept.sum()) == pytest.approx(4 * per_net)  # kept = (keep1 + keep2) / 2
    assert forget_rate_schedule(1, 0.4, 4) == pytest.approx(0.4 / 3)
    assert forget_rate_schedule(4, 0.4, 4) == 0.4


def test_each_network_is_updated_on_its_peers_small_loss_samples():
    m = _method(n=32, batch_size=32, forget_rate=0.5, num_gradual=1)
    recorded = {}
    m.ctx.step = lambda loss, opt: recorded.__setitem__(id(opt), loss.detach())  # no update: inspect only
    with torch.no_grad():
        x = m.ctx.normalize(m.ctx.train.x)
        ce1 = F.cross_entropy(m.net1(x), m.ctx.train.y, reduction="none")
        ce2 = F.cross_entropy(m.net2(x), m.ctx.train.y, reduction="none")
    m.train_epoch(5)  # R = τ = 0.5: each network keeps its 16 smallest losses
    small1, small2 = torch.argsort(ce1)[:16], torch.argsort(ce2)[:16]
    assert set(small1.tolist()) != set(small2.tolist()), "the two nets must disagree for the test to bite"
    torch.testing.assert_close(recorded[id(m.optimizer1)], ce1[small2].mean())  # net 1 ← net 2's choice
    torch.testing.assert_close(recorded[id(m.optimizer2)], ce2[small1].mean())
    assert not torch.allclose(recorded[id(m.optimizer1)], ce1[small1].mean())
    kept = torch.zeros(32)
    kept[small1] += 0.5
    kept[small2] += 0.5
    torch.testing.assert_close(m.clean_probability(), kept)


def test_forget_rate_sources():
    assert _method(hint=0.45).mode == "noise_rate_hint" and _method(hint=0.45).tau_fixed == 0.45
    fixed = _method(forget_rate=0.3)
    assert fixed.mode == "fixed" and fixed.train_epoch(10)["tau"] == 0.3
    assert _method(forget_rate="0.2").tau_fixed == 0.2
    assert _method(hint=None).mode == "estimate"  # no nominal rate (real noise): noise-blind
    for bad in ("oracle", 1.0, -0.1):
        with pytest.raises(LnlError, match="forget_rate"):
            _method(forget_rate=bad)


def test_estimate_fits_the_loss_gmm_during_the_ramp_then_freezes():
    m = _method(n=1000, forget_rate="estimate", num_gradual=5)
    assert m._tau(0) == 0.0  # nothing trained yet
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.3, 0.05, 700), rng.normal(2.5, 0.2, 300)])  # 30 % noisy
    m.last_loss = torch.tensor(losses, dtype=torch.float32)
    assert m._tau(1) == pytest.approx(0.3, abs=0.02)
    m.last_loss = torch.tensor(losses[::-1].copy() * 0 + 1.0, dtype=torch.float32)  # changes after the ramp…
    assert m._tau(5) == pytest.approx(0.3, abs=0.02)  # …are ignored: τ̂ is frozen from epoch T_k on


def test_adam_plan_matches_the_official_alpha_and_beta1_plans():
    m = _method(epochs=199, epoch_decay_start=80, lr=0.001)
    n_epoch = 200
    for epoch in (0, 77, 78, 79, 150, 198):
        j = epoch + 1  # main.py trains epochs 1..199 and indexes alpha_plan/beta1_plan by them
        lr = 0.001 * (n_epoch - j) / (n_epoch - 80) if j >= 80 else 0.001
        m._set_schedule(epoch)
        group = m.optimizer1.param_groups[0]
        assert group["lr"] == pytest.approx(lr) and group["betas"] == ((0.1 if j >= 80 else 0.9), 0.999)
    assert m.current_lr() == pytest.approx(0.001 / 120)


def test_digits_mini_recipe_really_augments_and_cifar_does_not(monkeypatch):
    """The digits ``mini`` recipe trains with crop augmentation (its ``augment: True`` was once dropped)."""
    from lnlbench.config import TrialConfig, resolve

    t = resolve(TrialConfig(method="coteaching", dataset="digits", noise="symmetric", rate=0.2))
    assert t.augment is True
    m = _method(**{k: v for k, v in dataclasses.asdict(t.hparams).items() if k not in ("model_kwargs", "epochs")})
    calls = []
    monkeypatch.setattr(m.ctx, "augment", lambda x: calls.append(len(x)) or m.ctx.normalize(x))
    m.train_epoch(0)
    assert calls and sum(calls) == 64  # every training batch went through the trial's training transform
    for preset, dataset in (("paper", "cifar10"), ("paper", "cifar100"), ("mini", "cifar10")):
        t = resolve(TrialConfig(method="coteaching", dataset=dataset, noise="symmetric", rate=0.5, preset=preset))
        assert t.augment is False, (preset, dataset)  # official: ToTensor only


def test_mini_cifar_recipe_passes_no_weight_decay_to_adam():
    from lnlbench.config import TrialConfig, resolve

    t = resolve(TrialConfig(method="coteaching", dataset="cifar10", noise="symmetric", rate=0.5, preset="mini"))
    assert t.hparams.optimizer == "adam" and t.hparams.weight_decay == 0.0  # official Adam: no weight decay
    m = _method(weight_decay=t.hparams.weight_decay)
    assert m.optimizer1.param_groups[0]["weight_decay"] == 0.0


def _flip_rate(generator, rate: float) -> float:
    """The harness's hint for CIFAR-10-like balanced labels (5,000 per class) under ``generator``."""
    labels = np.repeat(np.arange(10), 5000)
    noisy = generator(labels, 10, rate, np.random.default_rng(0), NoiseInfo(dataset="cifar10",
                                                                             classes=CIFAR10_CLASSES))
    return intended_flip_rate(labels, noisy.transition)


def test_forget_rate_is_the_generators_flip_rate():
    asym = _flip_rate(asymmetric, 0.4)
    assert asym == pytest.approx(0.2)  # 5 of 10 classes flip 40 %: τ 0.2, not the nominal 0.4
    m = _method(hint=0.4, flip=asym)
    assert (m.mode, m.tau_fixed) == ("flip_rate_hint", pytest.approx(0.2))
    assert m.train_epoch(10)["tau"] == pytest.approx(0.2)
    sym = _flip_rate(symmetric, 0.5)
    assert sym == pytest.approx(0.45)  # the true class is drawable: 1 − (0.5 + 0.5/10)
    assert _method(hint=0.5, flip=sym).tau_fixed == pytest.approx(0.45)
    nominal = _method(hint=0.5, flip=sym, forget_rate="noise_rate")  # the nominal rate, as main.py
    assert (nominal.mode, nominal.tau_fixed) == ("noise_rate_hint", 0.5)
    assert _method(hint=None, flip=None).mode == "estimate"  # neither (clean labels unknown): noise-blind


def test_engine_hands_the_flip_rate_to_the_method(tmp_path):
    def built(**kw):
        cfg = TrialConfig(method="coteaching", dataset="digits", noise="symmetric", rate=0.5, epochs=1,
                          subset=16, preset="mini", out_dir=str(tmp_path), **kw)
        trial = Trial(resolve(cfg), None)
        trial.build()
        return trial
    trial = built()
    assert trial.ctx.flip_rate_hint == pytest.approx(0.45) and trial.ctx.noise_rate_hint == 0.5
    assert (trial.method.mode, trial.method.tau_fixed) == ("flip_rate_hint", pytest.approx(0.45))
    assert built(hparams={"forget_rate": "noise_rate"}).method.tau_fixed == 0.5
