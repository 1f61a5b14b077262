"""What is unique to DivideMix: co-divide, co-refinement, co-guessing, the MixMatch batch, the λ_u ramp."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lnlbench.components import sharpen
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams, preset_overrides
from lnlbench.methods import dividemix as dm


def _method(n: int = 96, **hp) -> dm.DivideMix:
    g = torch.Generator().manual_seed(0)
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                     y=torch.arange(n) % 4)
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 1, False, "cpu"))
    torch.manual_seed(0)
    hp = {"model": "mlp", "batch_size": 16, "warm_up": 2, **hp}
    return dm.DivideMix(build_hparams(dm.DivideMixHparams, hp), ctx)


def test_co_refine_mixes_label_and_prediction_by_w_then_sharpens():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    net = lambda x: logits
    y, w = torch.tensor([0, 2]), torch.tensor([0.7, 0.0])
    got = dm.co_refine(net, torch.zeros(2, 1), torch.zeros(2, 1), y, w, 0.5)
    p = F.softmax(logits, 1)
    mixed = w[:, None] * F.one_hot(y, 3).float() + (1 - w[:, None]) * p
    assert torch.allclose(got, sharpen(mixed, 0.5))
    assert torch.allclose(got[1], sharpen(p[1:], 0.5)[0])  # w = 0: the net's own guess
    one = dm.co_refine(net, torch.zeros(2, 1), torch.zeros(2, 1), y, torch.ones(2), 0.5)
    assert torch.allclose(one, F.one_hot(y, 3).float())  # w = 1: the given label


def test_co_guess_averages_both_nets_over_both_views():
    a1, a2 = torch.randn(3, 4), torch.randn(3, 4)
    b1, b2 = torch.randn(3, 4), torch.randn(3, 4)
    u1, u2 = torch.zeros(3, 1), torch.ones(3, 1)
    net = lambda x: a1 if x[0, 0] == 0 else a2
    other = lambda x: torch.cat([b1, b2]) if len(x) == 6 else None
    got = dm.co_guess(net, other, u1, u2, 0.5)
    p = sum(F.softmax(t, 1) for t in (a1, a2, b1, b2)) / 4
    assert torch.allclose(got, sharpen(p, 0.5), atol=1e-6)
    alone = sharpen((F.softmax(a1, 1) + F.softmax(a2, 1)) / 2, 0.5)
    assert not torch.allclose(got, alone)  # the partner network changes the guess


def test_labeled_set_follows_the_threshold():
    prob = torch.tensor([0.2, 0.5, 0.51, 0.9, 0.6])
    lab, w, unl = dm.split_division(None, prob, 0.5)
    assert lab.tolist() == [2, 3, 4] and torch.equal(w, prob[[2, 3, 4]]) and unl.tolist() == [0, 1]
    lab, w, unl = dm.split_division(torch.tensor([10, 11, 12, 13, 14]), prob, 0.6)  # a subset's indices
    assert lab.tolist() == [13] and unl.tolist() == [10, 11, 12, 14]


def test_paper_table_per_setting():
    def hp(dataset, noise, rate):
        return build_hparams(dm.DivideMixHparams, preset_overrides(dm.PRESETS, "paper", dataset, noise, rate))
    assert (hp("cifar10", "symmetric", 0.2).lambda_u, hp("cifar10", "symmetric", 0.5).lambda_u) == (0, 25)
    h = hp("cifar10", "symmetric", 0.9)
    assert (h.lambda_u, h.p_threshold, h.loss_history, h.warm_up) == (50, 0.6, 5, 10)
    h = hp("cifar10", "asymmetric", 0.4)
    assert (h.lambda_u, h.penalty, h.p_threshold) == (0, True, 0.5)
    assert not hp("cifar10", "symmetric", 0.5).penalty
    assert [hp("cifar100", "symmetric", r).lambda_u for r in (0.2, 0.5, 0.8, 0.9)] == [25, 150, 150, 150]
    h = hp("cifar100", "symmetric", 0.9)
    assert (h.p_threshold, h.loss_history, h.warm_up, h.epochs, h.milestones) == (0.6, 5, 30, 301, (150,))
    h = hp("clothing1m", "given", None)
    assert (h.num_samples, h.penalty, h.unlabeled_forward, h.lambda_u, h.alpha, h.warm_up) == \
        (32000, True, False, 0, 0.5, 1)


def test_each_net_trains_on_the_other_nets_division(monkeypatch):
    m = _method()
    marks = {0: (None, torch.full((96,), 0.1)), 1: (None, torch.full((96,), 0.9))}
    monkeypatch.setattr(m, "_divide", lambda k, net: marks[k])
    seen = []
    monkeypatch.setattr(m, "_train_net", lambda e, net, other, opt, div: seen.append((net, other, opt, div)) or
                        (torch.zeros(()), torch.zeros(()), 0))
    m.train_epoch(2)
    (n1, o1, opt1, d1), (n2, o2, opt2, d2) = seen
    assert (n1, o1, opt1, d1) == (m.net1, m.net2, m.opt1, marks[1])  # net 1 ← net 2's division
    assert (n2, o2, opt2, d2) == (m.net2, m.net1, m.opt2, marks[0])  # net 2 ← net 1's division
    assert torch.equal(m.clean_probability(), marks[1][1])  # the division net 1 trained on
    m.train_epoch(0)
    assert m.clean_probability() is None  # warm-up: no division


def test_ramp_iterations_and_whole_batch_mixmatch(monkeypatch):
    m = _method()
    prob = torch.where(torch.arange(96) < 40, 0.9, 0.1)  # |X| = 40, |U| = 56, B = 16
    ramps, mixes = [], []
    monkeypatch.setattr(dm, "linear_rampup", lambda cur, start, length: ramps.append((cur, start, length)) or 0.5)
    real = dm.mixmatch

    def spy(inputs, targets, alpha, rng, gen):
        mixes.append((inputs, targets))
        return real(inputs, targets, alpha, rng, gen)
    monkeypatch.setattr(dm, "mixmatch", spy)
    lx, lu, n_lab = m._train_net(5, m.net1, m.net2, m.opt1, (None, prob))
    assert n_lab == 40 and torch.isfinite(lx) and torch.isfinite(lu)
    num_iter = 40 // 16 + 1  # the official |X| // B + 1, for the ramp's t = epoch + batch_idx / num_iter
    assert ramps == [(5 + i / num_iter, 2, 16.0) for i in range(3)]  # ceil(40 / 16) = 3 labeled batches
    sizes = []
    for inputs, targets in mixes:
        assert len(inputs) == 1 and len(targets) == 1  # one concatenation [x1, x2, u1, u2], one permutation
        t = targets[0]
        nb = (t.shape[0] - 32) // 2  # every unlabeled batch here has 16 rows
        sizes.append(t.shape[0])
        assert torch.equal(t[:nb], t[nb:2 * nb]) and torch.equal(t[2 * nb:2 * nb + 16], t[2 * nb + 16:])
    assert sizes == [64, 64, 48]  # 2·16 + 2·16 twice, then the last labeled batch of 8 with 16 unlabeled


def test_unlabeled_iterator_restarts_and_empty_pool():
    m = _method()
    it = m._unlabeled(torch.arange(20, 40))
    got = [next(it) for _ in range(4)]  # 16, 4, then a fresh shuffle
    assert [len(b) for b in got] == [16, 4, 16, 4]
    assert sorted(torch.cat(got[:2]).tolist()) == list(range(20, 40))
    lx, lu, n = m._train_net(3, m.net1, m.net2, m.opt1, (None, torch.ones(96)))  # U empty: X alone, Lu = 0
    assert n == 96 and torch.isfinite(lx) and lu == 0


def test_loss_history_averages_normalised_losses(monkeypatch):
    m = _method(loss_history=2)
    losses = iter([torch.linspace(0, 4, 96), torch.linspace(0, 2, 96).flip(0)])
    monkeypatch.setattr(dm, "per_sample_loss", lambda *a, **k: next(losses))
    fed = []
    monkeypatch.setattr(dm, "gmm_clean_probability", lambda v, seed: fed.append(v.clone()) or np.ones(len(v)))
    m._divide(0, m.net1)
    m.hist_count += 1
    m._divide(0, m.net1)
    first, second = torch.linspace(0, 1, 96), torch.linspace(0, 1, 96).flip(0)
    assert torch.allclose(fed[0], first) and torch.allclose(fed[1], (first + second) / 2)


def test_balanced_epoch_sample_matches_the_greedy_loader():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 0, 1, 2, 2, 2])
    g = torch.Generator().manual_seed(1)
    got = dm.balanced_epoch_sample(y, 6, 3, g)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1)).tolist()
    counts, ref = [0, 0, 0], []
    for i in order:  # dataloader_clothing1M.py: class_num[label] < n/C and len < n
        if counts[int(y[i])] < 6 / 3 and len(ref) < 6:
            ref.append(i)
            counts[int(y[i])] += 1
    assert got.tolist() == ref


def test_neg_entropy():
    logits = torch.randn(5, 3)
    p = F.softmax(logits, 1)
    assert torch.allclose(dm.neg_entropy(logits), (p * p.log()).sum(1).mean())


def test_resume_with_a_loss_history_equals_uninterrupted(smoke_trial):
    """Past warm-up with a 3-epoch loss history (the r = 0.9 recipe): the division, the GMM seed and the
    history survive the checkpoint (smoke_trial asserts the resumed epoch equals the uninterrupted one)."""
    a = smoke_trial("dividemix", loss_history=3)
    assert all(r["selection"] is not None for r in a["history"][1:])


def test_paper_table_covers_table6_and_reports_the_rest():
    """symmetric_exclusive (Table 6) uses Table 1's rows by rate; instance, CIFAR-N, other rates: defaults."""
    from lnlbench.config import TrialConfig, resolve

    def trial(dataset, noise, rate):
        return resolve(TrialConfig(method="dividemix", dataset=dataset, noise=noise, rate=rate))
    assert [trial("cifar100", "symmetric_exclusive", r).hparams.lambda_u for r in (0.2, 0.5, 0.8)] == [25, 150, 150]
    h = trial("cifar100", "symmetric_exclusive", 0.9).hparams
    assert (h.lambda_u, h.p_threshold, h.loss_history) == (150, 0.6, 5)
    assert trial("cifar10", "symmetric_exclusive", 0.2).hparams.lambda_u == 0
    t = trial("cifar100", "symmetric_exclusive", 0.8)
    assert t.recipe["status"] == "preset" and t.recipe["applied"][-1] == "cifar100/symmetric_exclusive@0.8"
    for dataset, noise, rate, missing in [("cifar100", "instance", 0.4, "cifar100/instance@0.4"),
                                          ("cifar10", "cifar10n:worst", None, "cifar10/cifar10n"),
                                          ("cifar100", "asymmetric", 0.4, "cifar100/asymmetric@0.4"),
                                          ("cifar10", "symmetric", 0.4, "cifar10/symmetric@0.4")]:
        t = trial(dataset, noise, rate)
        assert (t.recipe["status"], t.recipe["missing"]) == ("default", missing)
        assert t.hparams.lambda_u == 25.0 and t.hparams.p_threshold == 0.5  # what "default" means
    assert trial("cifar10", "asymmetric:elr", 0.4).recipe["status"] == "preset"
