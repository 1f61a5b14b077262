"""SCE: RCE = −A·(1 − p_y) with A = log 1e-4, the α/β combination, the recipe and the gradient clip."""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.methods.sce import SCE, SCEHparams, sce_loss

A = math.log(1e-4)  # −9.2103


def test_rce_is_minus_a_times_one_minus_p_y_by_hand():
    # logits (0, ln 3) → p = (0.25, 0.75); label 1: RCE = 9.2103 × 0.25 = 2.302585, CE = −ln 0.75 = 0.287682
    logits = torch.tensor([[0.0, math.log(3.0)]])
    loss, ce, rce = sce_loss(logits, torch.tensor([1]), alpha=0.1, beta=1.0)
    assert abs(rce.item() - 2.302585) < 1e-5 and abs(ce.item() - 0.287682) < 1e-5
    assert abs(loss.item() - (0.1 * 0.287682 + 2.302585)) < 1e-5


def test_rce_closed_form_and_alpha_beta_combination():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    p_y = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    _, ce, rce = sce_loss(logits, y, 1.0, 1.0)
    torch.testing.assert_close(rce, (-A * (1 - p_y)).mean(), rtol=1e-5, atol=1e-5)  # the 1e-7 clamp is idle
    torch.testing.assert_close(ce, F.cross_entropy(logits, y))
    for alpha, beta in [(0.1, 1.0), (6.0, 0.1), (1.0, 0.0)]:
        loss, _, _ = sce_loss(logits, y, alpha, beta)
        torch.testing.assert_close(loss, alpha * ce + beta * rce)


def test_rce_follows_the_clamps_of_the_reference():
    # one class at p ≈ 0 → clamped to 1e-7 inside RCE, so RCE = −A·Σ_{k≠y} max(p_k, 1e-7)
    logits = torch.tensor([[0.0, 0.0, -60.0]])
    _, _, rce = sce_loss(logits, torch.tensor([0]), 1.0, 1.0)
    assert abs(rce.item() - (-A) * (0.5 + 1e-7)) < 1e-5
    _, _, rce2 = sce_loss(logits, torch.tensor([0]), 1.0, 1.0, label_clamp=1e-2)  # A = log 1e-2
    assert abs(rce2.item() - (-math.log(1e-2)) * 0.5) < 1e-5


def test_rce_gradient_is_bounded_mae_like():
    logits = torch.tensor([[5.0, -5.0, 0.0]], requires_grad=True)
    loss, _, _ = sce_loss(logits, torch.tensor([1]), 0.0, 1.0)
    loss.backward()
    p = F.softmax(logits.detach(), 1)[0]
    # d(−A(1 − p_y))/dz_j = A·p_y·(δ_jy − p_j)
    expected = A * p[1] * (torch.eye(3)[1] - p)
    torch.testing.assert_close(logits.grad[0], expected, rtol=1e-4, atol=1e-6)


class _Plain:
    def __call__(self, x, generator=None):
        return self.normalize(x)

    def normalize(self, x):
        return x.float() / 255.0


def test_training_clips_the_gradient_norm():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=g)
    ctx = MethodContext(train=TrainSet(x=x, y=torch.randint(0, 10, (32,), generator=g)), num_classes=10,
                        image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0, augmenter=_Plain())
    torch.manual_seed(0)
    method = SCE(SCEHparams(model="mlp", epochs=1, batch_size=32, lr=0.0, momentum=0.0, weight_decay=0.0,
                            grad_bound=1e-3), ctx)
    logs = method.train_epoch(0)
    assert logs["grad_norm"] > 1e-3  # the pre-clip norm is logged
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in method.model.parameters()]))
    assert abs(clipped.item() - 1e-3) < 1e-6


def test_presets_follow_the_reference_recipe():
    hp = SCEHparams()
    assert (hp.model, hp.epochs, hp.lr, hp.nesterov, hp.weight_decay, hp.milestones) == \
        ("sce_cnn", 120, 0.01, True, 1e-2, (40, 80))
    assert (hp.alpha, hp.beta, hp.label_clamp, hp.grad_bound) == (0.1, 1.0, 1e-4, 5.0)
    c100 = dataclasses.replace(hp, **SCE.PRESETS["paper"]["cifar100"])
    assert (c100.model, c100.epochs, c100.alpha, c100.beta) == ("resnet34", 150, 6.0, 0.1)
