"""The anchor-point estimator on a constructed case with a known matrix; corrected losses by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnlbench.components.transition import (
    anchor_indices,
    anchor_transition,
    backward_corrected_loss,
    forward_corrected_loss,
    predict_probs,
    shared_anchors,
    transition_inverse,
)
from lnlbench.metrics import transition_error

T3 = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5]])


def _posteriors(n: int, near: int = 0, seed: int = 0) -> torch.Tensor:
    """Noisy-class posteriors P(ỹ | x) = P(y | x)·T: ``n`` samples whose clean posteriors are mixtures that
    are never pure, ``near`` near-anchors per class (P(y = i | x) ≥ 0.95) and one perfect anchor per class."""
    g = torch.Generator().manual_seed(seed)
    mixed = torch.softmax(torch.randn(n, 3, generator=g), 1) * 0.9 + 0.1 / 3
    eps = 0.05 * torch.rand(3 * near, 1, generator=g)
    nearly = (1 - eps) * torch.eye(3).repeat_interleave(near, 0) + eps / 3
    return torch.cat([mixed, nearly, torch.eye(3)]) @ T3


def test_anchor_points_recover_the_matrix_exactly_without_the_filter():
    probs = _posteriors(500)
    assert anchor_indices(probs, filter_outlier=False).tolist() == [500, 501, 502]  # the perfect anchors
    torch.testing.assert_close(anchor_transition(probs, filter_outlier=False), T3)


def test_outlier_filter_skips_the_top_three_percent_as_numpy_higher():
    probs = torch.rand(200, 3, generator=torch.Generator().manual_seed(1))
    idx = anchor_indices(probs, filter_outlier=True, percentile=97.0)
    for i in range(3):
        col = probs[:, i].numpy().copy()
        thresh = np.percentile(col, 97, method="higher")
        col[col >= thresh] = 0.0
        assert idx[i].item() == int(np.argmax(col))
    est = anchor_transition(probs, filter_outlier=True)
    torch.testing.assert_close(est.sum(1), torch.ones(3))


def test_filtered_estimate_is_close_on_the_constructed_case():
    probs = _posteriors(1000, near=100)
    est = anchor_transition(probs, filter_outlier=True)  # skips each class's top 3 % (39 of 1303 samples)
    assert transition_error(est, T3.numpy()) < 0.02  # a near-anchor below the 97th percentile
    assert transition_error(anchor_transition(_posteriors(1000), filter_outlier=True), T3.numpy()) > 0.05


def test_forward_loss_by_hand():
    # q = (0.25, 0.75); T = [[0.8, 0.2], [0.4, 0.6]] → qT = (0.5, 0.5); −log 0.5 for either label
    logits = torch.tensor([[0.0, math.log(3.0)]])
    t = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    for y in (0, 1):
        assert forward_corrected_loss(logits, torch.tensor([y]), t).item() == pytest.approx(math.log(2), abs=1e-6)
    eye = forward_corrected_loss(logits, torch.tensor([1]), torch.eye(2))
    assert eye.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([1])).item(), abs=1e-6)


def test_backward_loss_by_hand():
    # T = [[0.8, 0.2], [0.4, 0.6]], T⁻¹ = [[1.5, −0.5], [−1, 2]]; q = (0.25, 0.75)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    inv = torch.linalg.inv(torch.tensor([[0.8, 0.2], [0.4, 0.6]]))
    torch.testing.assert_close(inv, torch.tensor([[1.5, -0.5], [-1.0, 2.0]]))
    l0, l1 = -math.log(0.25), -math.log(0.75)
    got = backward_corrected_loss(logits.repeat(2, 1), torch.tensor([0, 1]), inv)
    torch.testing.assert_close(got, torch.tensor([1.5 * l0 - 0.5 * l1, -1.0 * l0 + 2.0 * l1]))


def test_backward_loss_is_unbiased_over_the_noise():
    # E_{ỹ ~ T_y·}[ℓ←(q, ỹ)] = ℓ(q, y): the backward-corrected loss averaged over the noise is the clean CE
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    inv = torch.linalg.inv(T3)
    per_noisy = torch.stack([backward_corrected_loss(logits, torch.full((4,), j), inv) for j in range(3)], 1)
    for y in range(3):
        expected = (per_noisy * T3[y]).sum(1)
        torch.testing.assert_close(expected, F.cross_entropy(logits, torch.full((4,), y), reduction="none"),
                                   atol=1e-5, rtol=1e-5)


def test_predict_probs_batches_and_normalises():
    x = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    lin = torch.nn.Linear(2, 3)
    out = predict_probs(lin, x, lambda b: b / 10, batch_size=2)
    torch.testing.assert_close(out, torch.softmax(lin(x / 10), 1))


def test_transition_error_is_the_mean_absolute_error():
    assert transition_error(torch.eye(2), np.array([[0.5, 0.5], [0.0, 1.0]])) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="shape"):
        transition_error(torch.eye(3), np.eye(2))


def test_transition_inverse_returns_none_for_a_singular_or_float32_hopeless_matrix():
    inv, cond = transition_inverse(T3)
    torch.testing.assert_close(inv @ T3, torch.eye(3), atol=1e-5, rtol=0)
    assert 1.0 <= cond < 10
    dup = T3.clone()
    dup[2] = dup[0]
    assert transition_inverse(dup)[0] is None
    near = torch.tensor([[0.5, 0.5], [0.5, 0.5 + 1e-9]])
    inv, cond = transition_inverse(near)
    assert inv is None and cond > 1e8


def test_shared_anchors_groups_classes_reading_one_sample():
    assert shared_anchors(torch.tensor([3, 7, 3, 1, 7, 3])) == [(0, 2, 5), (1, 4)]
    assert shared_anchors(torch.tensor([0, 1, 2])) == []
