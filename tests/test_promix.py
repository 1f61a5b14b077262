"""What is unique to ProMix: class-wise small-loss selection, matched high-confidence selection, label guessing
by agreement, the selection-rate and loss-weight schedules, the debiasing maths, FMix, the FixMatch RandAugment
pool, the recipes and the epoch's shape."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toy_ctx import TOY_HP, toy_context

from lnlbench.components import autoaugment as aa
from lnlbench.components.mixing import fmix, fmix_loss, fmix_mask
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.hparams import build_hparams, preset_overrides
from lnlbench.methods import promix as pm


def _method(n: int = 96, **hp) -> pm.ProMix:
    ctx = toy_context(n)
    return pm.ProMix(build_hparams(pm.ProMixHparams, {**TOY_HP, "bias_m": 0.9, **hp}), ctx)


# -- class-wise small-loss selection (CSS) -------------------------------------------------------------------------
def test_css_takes_the_ceil_quota_of_smallest_losses_per_class():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)  # N = 10, C = 3: quota ⌈10/3·0.5⌉ = 2
    losses = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.7, 0.4, 0.2, 0.6, 5.0])
    mask = pm.class_wise_small_loss(losses, y, 3, 0.5)
    assert torch.bincount(y[mask], minlength=3).tolist() == [2, 2, 1]  # class 2 has one sample: all of it
    assert set(mask.nonzero().squeeze(1).tolist()) == {1, 3, 6, 7, 9}
    # the quota is per class, not a global threshold: class 2's huge loss is kept
    assert bool(mask[9])


def test_css_keeps_at_least_one_and_skips_empty_classes():
    y = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2])  # class 1 empty
    mask = pm.class_wise_small_loss(torch.arange(8.0), y, 3, 0.01)  # ⌈8/3·0.01⌉ = 1
    assert mask.tolist() == [True, False, False, False, True, False, False, False]
    full = pm.class_wise_small_loss(torch.rand(8), y, 3, 1.0)  # ⌈8/3⌉ = 3 of each 4
    assert torch.bincount(y[full], minlength=3).tolist() == [3, 0, 3]


# -- matched high-confidence selection (MHCS) and label guessing (LGA) ---------------------------------------------
def test_mhcs_needs_the_noisy_label_predicted_above_tau():
    probs = torch.tensor([[0.995, 0.005], [0.995, 0.005], [0.5, 0.5], [0.01, 0.99]])
    y = torch.tensor([0, 1, 0, 1])
    assert pm.matched_high_confidence(probs, y, 0.99).tolist() == [True, False, False, False]  # 0.99 is not > 0.99
    assert pm.matched_high_confidence(probs, y, 0.95).tolist() == [True, False, False, True]


def test_label_guessing_fills_up_to_threshold_with_the_most_confident_agreeing():
    chosen = torch.tensor([True, False, False, False, False, False, False, False, False, False])
    s1 = torch.tensor([0.0, 0.99, 0.97, 0.999, 0.999, 0.5, 0.99, 0.98, 0.995, 0.991])
    s2 = torch.tensor([0.0, 0.99, 0.99, 0.999, 0.999, 0.99, 0.99, 0.98, 0.996, 0.992])
    agree = torch.tensor([True, True, True, True, False, True, True, True, True, True])
    # B = 10, threshold 0.5: room int(5) − 1 = 4; candidates (> 0.95, agree, unchosen): 1, 2, 3, 6, 7, 8, 9
    out = pm.label_guessing(chosen, s1, s2, agree, 0.95, 0.5)
    assert out.sum() == 5 and bool(out[0])
    assert set(out.nonzero().squeeze(1).tolist()) == {0, 3, 8, 9, 1}  # means .999, .9955, .9915, .99 (1 before 6)
    assert not out[4] and not out[5]  # disagreeing / one confidence too low
    # already at the threshold: unchanged
    full = torch.tensor([True] * 5 + [False] * 5)
    assert torch.equal(pm.label_guessing(full, s1, s2, agree, 0.95, 0.5), full)


# -- schedules ---------------------------------------------------------------------------------------------------------
def test_selection_rate_ramps_linearly_then_stays():
    assert pm.selection_rate(0, 0.2, 0.6, 50) == pytest.approx(0.2)
    assert pm.selection_rate(25, 0.2, 0.6, 50) == pytest.approx(0.4)
    assert pm.selection_rate(50, 0.2, 0.6, 50) == pytest.approx(0.6)
    assert pm.selection_rate(400, 0.2, 0.6, 50) == pytest.approx(0.6)
    assert pm.selection_rate(10, 0.5, 0.5, 50) == pytest.approx(0.5)  # run.sh: constant ρ


def test_unchosen_weight_is_the_official_beta():
    assert pm.unchosen_weight(10, 50, 0.8) == pytest.approx(0.1 * 10 / 100)
    assert pm.unchosen_weight(99, 50, 0.8) == pytest.approx(0.1 * 99 / 100)
    assert pm.unchosen_weight(100, 50, 0.8) == 0.0 and pm.unchosen_weight(500, 50, 0.8) == 0.0
    assert pm.unchosen_weight(300, 50, 0.0) == 1.0  # without pseudo-label debiasing: always 1


def test_lr_is_cosine_over_600_to_a_thousandth():
    hp = pm.ProMixHparams()
    assert pm.promix_lr(0, hp) == pytest.approx(0.05)
    assert pm.promix_lr(300, hp) == pytest.approx(5e-5 + (0.05 - 5e-5) / 2)
    assert pm.promix_lr(600, hp) == pytest.approx(5e-5)  # the last of range(601)


# -- debiasing -----------------------------------------------------------------------------------------------------------
def test_debias_logits_and_probs():
    z = torch.tensor([[1.0, 2.0, 0.5]])
    prior = torch.tensor([0.5, 0.25, 0.25])
    assert torch.allclose(pm.debias_logits(z, prior, 0.8), z + 0.8 * prior.log())
    p = pm.debiased_probs(z, prior, 1.0)
    by_hand = F.softmax(z, 1) / prior
    assert torch.allclose(p, by_hand / by_hand.sum(), atol=1e-6)  # p / π renormalised
    uniform = torch.full((3,), 1 / 3)
    assert torch.allclose(pm.debiased_probs(z, uniform, 0.8), F.softmax(z, 1), atol=1e-6)  # uniform: no change
    # logit adjustment lowers the loss of the frequent class's margin: CE(z + log π) at the head class < CE(z)
    ce_adj = F.cross_entropy(pm.debias_logits(z, prior, 1.0), torch.tensor([0]))
    assert ce_adj < F.cross_entropy(z, torch.tensor([0]))


def test_prior_update_is_an_ema_of_the_batch_mean():
    prior = torch.tensor([0.5, 0.5])
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(pm.update_prior(prior, probs, 0.9), 0.9 * prior + 0.1 * torch.tensor([0.75, 0.25]))
    assert torch.equal(pm.update_prior(prior, probs[:0], 0.9), prior)  # empty set: unchanged


def test_masked_mean():
    loss = torch.tensor([1.0, 2.0, 3.0])
    assert pm.masked_mean(loss, torch.tensor([True, False, True])) == pytest.approx(2.0)
    assert pm.masked_mean(loss, torch.tensor([False, False, False])) == 0.0


# -- FMix and the strong view ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("h", "w"), [(32, 32), (8, 8), (7, 9)])
def test_fmix_mask_has_lambda_of_the_pixels(h, w):
    rng = np.random.default_rng(0)
    for lam in (0.0, 0.3, 0.77, 1.0):
        m = fmix_mask(h, w, lam, rng)
        assert m.shape == (h, w) and set(np.unique(m)) <= {0.0, 1.0}
        assert m.sum() in (math.floor(lam * h * w), math.ceil(lam * h * w))


def test_fmix_mask_is_low_frequency():
    m = fmix_mask(32, 32, 0.5, np.random.default_rng(1))
    changes = np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum()
    assert changes < 0.25 * 2 * 32 * 31  # far fewer edges than a random mask (about half the pairs)


def test_fmix_and_its_loss():
    x = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    xm, perm, lam = fmix(x, 1.0, np.random.default_rng(3), torch.Generator().manual_seed(0))
    assert xm.shape == x.shape and 0 <= lam <= 1
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    by_hand = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    assert fmix_loss(logits, y, perm, lam) == pytest.approx(float(by_hand))


def test_fixmatch_randaugment_is_seeded_and_cuts_out():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), generator=g).to(torch.uint8)
    a = aa.randaugment_fixmatch(x, 3, torch.Generator().manual_seed(7))
    b = aa.randaugment_fixmatch(x, 3, torch.Generator().manual_seed(7))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    fill = torch.tensor(aa.FIXMATCH_CUTOUT_FILL).view(3, 1, 1)
    assert ((a.float() == fill).all(1)).any()  # some Cutout pixels in (125, 123, 114)
    assert aa.randaugment_fixmatch(x[:, :1], 2, torch.Generator().manual_seed(1)).shape == (16, 1, 32, 32)


def test_cutout_abs_takes_a_colour_per_channel():
    x = torch.zeros(1, 3, 4, 4)
    out = aa.cutout_abs(x, torch.tensor([4.0]), (1.0, 2.0, 3.0), torch.Generator().manual_seed(0))
    box = out[0, 0] != 0
    assert box.any() and torch.equal(out[0, :, box], torch.tensor([[1.0], [2.0], [3.0]]).expand(3, int(box.sum())))


# -- recipes and the epoch ---------------------------------------------------------------------------------------------
def test_paper_recipes_follow_run_sh():
    c10 = preset_overrides(pm.PRESETS, "paper", "cifar10", "symmetric", 0.2)
    got = (c10["rho_start"], c10["rho_end"], c10["tau"], c10["warm_up"], c10["debias_pl"])
    assert got == (0.7, 0.7, 0.99, 10, 0.8)
    assert c10["epochs"] == 601 and c10["batch_size"] == 256 and c10["model"] == "resnet18"
    asym = preset_overrides(pm.PRESETS, "paper", "cifar10", "asymmetric", 0.4)
    assert asym["penalty"] and asym["rho_end"] == 0.5
    c100n = preset_overrides(pm.PRESETS, "paper", "cifar100", "cifar100n", None)
    assert (c100n["rho_end"], c100n["tau"], c100n["warm_up"], c100n["debias_output"]) == (0.5, 0.95, 30, 0.5)
    assert pm.ProMix.preset_hparams("paper", "cifar10", "cifar10n", None)["epochs"] == 601  # the budget column


def test_epoch_shape_warmup_then_selection():
    m = _method()
    assert "rho" not in m.train_epoch(0) and m.clean_probability() is None
    out = m.train_epoch(1)
    assert {"rho", "chosen_fraction", "css_fraction"} <= set(out)
    chosen = m.clean_probability()
    assert chosen is not None and bool((chosen >= m.css.float()).all())  # MHCS / LGA only add to CSS
    assert not torch.allclose(m.priors, torch.full_like(m.priors, 0.25))  # the priors moved
    assert torch.allclose(m.priors.sum(1), torch.ones(4), atol=1e-5)
    assert m.predict(m.ctx.normalize(m.ctx.train.x[:5])).shape == (5, 4)


def test_rgb_epoch_uses_the_randaugment_view():
    g = torch.Generator().manual_seed(0)
    n = 32
    y = torch.arange(n) % 2
    x = torch.randint(0, 256, (n, 3, 16, 16), generator=g).to(torch.uint8)
    aug = Augmenter.build((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 2, True, "cpu")
    ctx = MethodContext(train=TrainSet(x=x, y=y), num_classes=2, image_shape=(3, 16, 16),
                        device=torch.device("cpu"), seed=0, augmenter=aug)
    hp = {"model": "mlp", "model_kwargs": {"hidden": (8,)}, "batch_size": 8, "lr": 0.05, "schedule": "constant",
          "warm_up": 1}
    m = pm.ProMix(build_hparams(pm.ProMixHparams, hp), ctx)
    strong = m.strong(x[:4])
    assert strong.shape == (4, 3, 16, 16) and strong.dtype == torch.float32
    m.train_epoch(0)
    assert torch.isfinite(m.train_epoch(1)["loss"])
