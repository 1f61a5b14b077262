"""The clipped optimiser step: same as an unclipped step under the bound, norm = bound above it."""
from __future__ import annotations

import torch
from torch import nn

from lnlbench.components import clipped_step


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    return model, torch.optim.SGD(model.parameters(), lr=0.1), x, y


def _grad_norm(model):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def test_clip_bounds_the_total_norm_and_returns_the_raw_norm():
    model, opt, x, y = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    norm = clipped_step(nn.functional.cross_entropy(model(x), y) * 100, opt, model.parameters(), 0.5)
    assert norm.item() > 0.5 and abs(_grad_norm(model) - 0.5) < 1e-5
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert abs(step.norm().item() - 0.1 * 0.5) < 1e-6  # SGD lr 0.1 on the clipped gradient


def test_no_clip_equals_a_plain_step():
    m1, o1, x, y = _setup(1)
    m2, o2, _, _ = _setup(1)
    clipped_step(nn.functional.cross_entropy(m1(x), y), o1, m1.parameters(), 0.0)  # ≤ 0: off
    o2.zero_grad()
    nn.functional.cross_entropy(m2(x), y).backward()
    o2.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_large_bound_leaves_the_gradient_alone():
    model, opt, x, y = _setup(2)
    norm = clipped_step(nn.functional.cross_entropy(model(x), y), opt, model.parameters(), 1e6)
    assert abs(_grad_norm(model) - norm.item()) < 1e-6
