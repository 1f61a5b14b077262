"""Unit tests of the shared components methods are built from."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lnlbench.components import (
    ModelEMA,
    ensemble_logits,
    forget_rate_schedule,
    gmm_clean_probability,
    linear_rampup,
    mixmatch,
    mixup,
    per_class_lowest,
    per_sample_loss,
    sample_lambda,
    sharpen,
    sigmoid_rampup,
    small_loss_mask,
    soft_cross_entropy,
)
from lnlbench.components.selection import minmax


def test_sample_lambda_max_and_beta():
    rng = np.random.default_rng(0)
    lams = [sample_lambda(rng, 4.0, take_max=True) for _ in range(2000)]
    assert min(lams) >= 0.5 and max(lams) <= 1.0
    raw = [sample_lambda(np.random.default_rng(1), 1.0) for _ in range(1)]
    assert 0 <= raw[0] <= 1
    assert sample_lambda(rng, 0.0) == 1.0


def test_mixup_mixes_inputs_and_targets_with_one_permutation():
    x = torch.arange(8.0).view(4, 2)
    t = torch.eye(4)
    xm, tm, lam, perm = mixup(x, t, 1.0, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert torch.allclose(xm, lam * x + (1 - lam) * x[perm])
    assert torch.allclose(tm, lam * t + (1 - lam) * t[perm])
    assert torch.allclose(tm.sum(1), torch.ones(4))


def test_mixmatch_permutes_the_whole_concatenated_batch():
    g = torch.Generator().manual_seed(0)
    groups = [torch.full((3, 1), float(i)) for i in range(4)]  # x1, x2, u1, u2 tagged 0..3
    targets = [torch.nn.functional.one_hot(torch.full((3,), i), 4).float() for i in range(4)]
    xm, tm, lam = mixmatch(groups, targets, 4.0, np.random.default_rng(3), g)
    assert lam >= 0.5 and xm.shape == (12, 1)
    # each mixed row = lam*own + (1-lam)*partner, and partners come from every group (one permutation of all)
    partner = ((xm[:, 0] - lam * torch.arange(4).repeat_interleave(3)) / (1 - lam)).round()
    assert set(partner.tolist()) - {0.0, 1.0, 2.0, 3.0} == set()
    assert len(set(partner.tolist())) > 1
    assert torch.allclose(tm.sum(1), torch.ones(12))


def test_sharpen_matches_closed_form():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    q = sharpen(p, 0.5)
    expected = torch.tensor([0.36, 0.09, 0.01]) / 0.46
    assert torch.allclose(q[0], expected)


def test_soft_cross_entropy_equals_ce_for_one_hot():
    logits = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(soft_cross_entropy(logits, torch.eye(3)[y]), ce, atol=1e-6)


def test_ramps():
    assert linear_rampup(5, 10, 16) == 0.0 and linear_rampup(18, 10, 16) == 0.5 and linear_rampup(40, 10, 16) == 1
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5)) and sigmoid_rampup(10, 10) == 1.0
    # Co-teaching: linspace(0, tau, T_k) then tau
    sched = [forget_rate_schedule(e, 0.5, 10) for e in range(12)]
    assert np.allclose(sched[:10], np.linspace(0, 0.5, 10)) and sched[10:] == [0.5, 0.5]


def test_per_sample_loss_matches_unreduced_ce():
    model = nn.Linear(4, 3)
    x = torch.randint(0, 256, (10, 4), dtype=torch.uint8)
    y = torch.randint(0, 3, (10,))
    norm = lambda b: b.float() / 255
    got = per_sample_loss(model, x, y, norm, batch_size=3)
    ref = torch.nn.functional.cross_entropy(model(norm(x)), y, reduction="none")
    assert torch.allclose(got, ref, atol=1e-6)


def test_gmm_split_finds_the_low_loss_cluster():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.2, 0.05, 800), rng.normal(2.0, 0.3, 200)])
    prob = gmm_clean_probability(minmax(torch.tensor(losses)))
    assert prob[:800].mean() > 0.95 and prob[800:].mean() < 0.05
    assert np.array_equal(prob, gmm_clean_probability(minmax(torch.tensor(losses))))  # seeded


def test_small_loss_mask_keeps_the_smallest():
    losses = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    assert small_loss_mask(losses, 0.4).tolist() == [False, True, False, True, False]
    assert small_loss_mask(losses, 0.0).sum() == 0


def test_per_class_lowest_takes_each_class_quota_of_lowest_scores():
    y = torch.tensor([0, 1, 0, 1, 0, 2, 1, 0])
    scores = torch.tensor([0.4, 0.2, 0.1, 0.9, 0.3, 0.5, 0.2, 0.3])
    mask = per_class_lowest(scores, y, torch.tensor([2, 1, 3]))
    # class 0: 0.1 (2), then 0.3 at 4 and 7 tie -> the lower index 4; class 1: 0.2 at 1 and 6 tie -> 1;
    # class 2 has one sample, fewer than its quota 3: taken
    assert mask.tolist() == [False, True, True, False, True, True, False, False]
    assert per_class_lowest(scores, y, torch.zeros(3, dtype=torch.long)).sum() == 0
    # a class with no samples is skipped
    assert per_class_lowest(scores[:2], torch.tensor([0, 2]), torch.tensor([1, 1, 1])).tolist() == [True, True]


def test_ema_update_and_state():
    torch.manual_seed(0)
    net = nn.Linear(2, 2)
    ema = ModelEMA(net, 0.9)
    before = ema.model.weight.clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    assert torch.allclose(ema.model.weight, 0.9 * before + 0.1 * net.weight)
    other = ModelEMA(net, 0.5)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.model.weight, ema.model.weight) and other.decay == 0.9


def test_ensemble_sums_logits():
    a, b = nn.Linear(2, 3), nn.Linear(2, 3)
    x = torch.randn(4, 2)
    assert torch.allclose(ensemble_logits([a, b], x), a(x) + b(x))


# -- co-training mechanics (Co-teaching, Co-teaching+, JoCoR) ------------------------------------------------
def test_adam_plan_is_the_official_alpha_and_beta1_plan():
    from lnlbench.components.cotrain import adam_plan

    # n_epoch = 200, decay from official epoch 80: our epoch e is official epoch e + 1
    assert adam_plan(78, 0.001, 199, 80) == (0.001, 0.9)
    lr, beta1 = adam_plan(79, 0.001, 199, 80)
    assert lr == pytest.approx(0.001 * 120 / 120) and beta1 == 0.1
    assert adam_plan(198, 0.001, 199, 80)[0] == pytest.approx(0.001 / 120)


def test_forget_rate_mode_sources_and_one_line_errors():
    from lnlbench.components.cotrain import forget_rate_mode
    from lnlbench.errors import LnlError

    assert forget_rate_mode("flip_rate", 0.5, 0.45) == ("flip_rate_hint", 0.45)
    assert forget_rate_mode("flip_rate", 0.5, None) == ("noise_rate_hint", 0.5)
    assert forget_rate_mode("noise_rate", None, 0.45) == ("estimate", 0.0)
    assert forget_rate_mode("0.3", None, None) == ("fixed", 0.3)
    with pytest.raises(LnlError, match="^jocor: forget_rate"):
        forget_rate_mode("oracle", 0.5, None, "jocor")
