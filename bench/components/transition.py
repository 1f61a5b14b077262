"""Class-transition matrices: the anchor-point estimator and the forward / backward corrected losses.

T is C×C, row = clean class i, column = noisy class j, T_ij = P(noisy j | clean i); rows sum to 1. A
network trained with CE on noisy labels estimates P(noisy | x); at an *anchor point* x of class i (P(clean i
| x) = 1) that row is T_i· (Patrini et al., CVPR 2017, Thm. 3). The estimator takes, per class i, the
training image with the highest p_i (or, filtering outliers, the highest below the 97th percentile of
p_i) and reads its predicted distribution as row i — ``giorgiop/loss-correction`` ``models.py``
``NoiseEstimator.fit/predict``; T-Revision (``xiaoboxia/T-Revision`` ``tools.py`` ``fit``) uses the same.

The corrected losses (``loss.py`` ``robust``), on probabilities clipped to [ε, 1 − ε] as the Keras code does:
forward −log (q·T)_ỹ, backward −(T⁻¹)_ỹ· · log q. Importance reweighting (T-Revision ``loss.py``
``reweight_loss`` / ``reweighting_revision_loss``): CE on the noisy label weighted by β = q_ỹ / (q·T)_ỹ, the
ratio of the clean to the noisy posterior of the observed label.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import evalbatch

EPS = 1e-7  # Keras' K.epsilon(), the official code's clip


@torch.no_grad()
def predict_probs(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  normalize: Callable[[torch.Tensor], torch.Tensor], batch_size: int | None = None,
                  autocast=None) -> torch.Tensor:
    """Softmax of every image under the test transform, (N, C) float32, in no-grad batches (``batch_size``:
    the device's evaluation batch unless given; methods pass ``ctx.eval_batch_size``)."""
    batch_size = batch_size or evalbatch.eval_batch_size(x.device)
    chunks = []
    for s in range(0, len(x), batch_size):
        xb = normalize(x[s:s + batch_size])
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = predict(xb)
        chunks.append(F.softmax(logits.float(), dim=1))
    return torch.cat(chunks)


def anchor_indices(probs: torch.Tensor, filter_outlier: bool = True, percentile: float = 97.0) -> torch.Tensor:
    """Per class i, the row index of its anchor point: argmax_n p_ni, or with ``filter_outlier`` the argmax
    after zeroing every p_ni at or above the class's ``percentile`` (numpy's ``interpolation='higher'``)."""
    if not filter_outlier:
        return probs.argmax(0)
    thresh = torch.quantile(probs, percentile / 100.0, dim=0, interpolation="higher")
    return probs.masked_fill(probs >= thresh, 0.0).argmax(0)


def anchor_transition(probs: torch.Tensor, filter_outlier: bool = True, percentile: float = 97.0,
                      anchors: torch.Tensor | None = None) -> torch.Tensor:
    """The anchor-point estimate of T from (N, C) predicted noisy-class probabilities, rows normalised
    (``anchors``: the rows' :func:`anchor_indices`, where the caller already has them)."""
    if anchors is None:
        anchors = anchor_indices(probs, filter_outlier, percentile)
    t = probs[anchors].double()
    return (t / t.sum(1, keepdim=True).clamp_min(1e-12)).float()


def transition_inverse(transition: torch.Tensor) -> tuple[torch.Tensor | None, float]:
    """(T⁻¹ in float32 or None, the 2-norm condition number of T): None where T is singular, or so
    ill-conditioned (condition ≥ 1 / float32 ε) that a float32 T⁻¹ is rounding noise. The official code
    inverts once with ``numpy.linalg.inv``, which raises only on an exactly singular matrix."""
    t = transition.double()
    cond = float(torch.linalg.cond(t))
    if not cond < 1.0 / torch.finfo(torch.float32).eps:  # inf / nan: singular
        return None, cond
    return torch.linalg.inv(t).float(), cond


def shared_anchors(anchors: torch.Tensor) -> list[tuple[int, ...]]:
    """The groups of classes (two or more) whose anchor point is the same training sample: their rows of
    the estimate are equal, so T is singular."""
    groups: dict[int, list[int]] = {}
    for cls, idx in enumerate(anchors.tolist()):
        groups.setdefault(idx, []).append(cls)
    return [tuple(g) for g in groups.values() if len(g) > 1]


def forward_corrected_loss(logits: torch.Tensor, y: torch.Tensor, transition: torch.Tensor) -> torch.Tensor:
    """Per-sample forward correction −log (q T)_y: the clean posterior pushed through T, scored on y."""
    q = F.softmax(logits.float(), dim=1).clamp(EPS, 1.0 - EPS)
    noisy = q @ transition.to(q)
    return -torch.log(noisy.gather(1, y[:, None]).squeeze(1))


def backward_corrected_loss(logits: torch.Tensor, y: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Per-sample backward correction −Σ_j (T⁻¹)_yj log q_j (``inverse`` = T⁻¹): unbiased for the clean
    loss in expectation over the noise, unbounded below where T⁻¹ has negative entries (hence the clip)."""
    log_q = F.softmax(logits.float(), dim=1).clamp(EPS, 1.0 - EPS).log()
    return -(inverse.to(log_q)[y] * log_q).sum(1)


def importance_weights(logits: torch.Tensor, y: torch.Tensor, transition: torch.Tensor) -> torch.Tensor:
    """β = q_ỹ / (q·T)_ỹ per sample (q = softmax of the logits): clean over noisy posterior of the label."""
    q = F.softmax(logits.float(), dim=1)
    noisy = q @ transition.to(q)
    return q.gather(1, y[:, None]).squeeze(1) / noisy.gather(1, y[:, None]).squeeze(1)


def reweighted_loss(logits: torch.Tensor, y: torch.Tensor, transition: torch.Tensor,
                    detach_weights: bool = True) -> torch.Tensor:
    """Batch mean of β·CE(logits, ỹ). T-Revision's reweighting stage treats β as a constant
    (``detach_weights``); its revision stage lets the gradient reach T + ΔT (and the network) through β."""
    beta = importance_weights(logits, y, transition)
    if detach_weights:
        beta = beta.detach()
    return (beta * F.cross_entropy(logits.float(), y, reduction="none")).mean()


def holdout_split(rng, n: int, fraction: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out, fitted) positions of a random ``fraction`` of the n noisy training samples, drawn from the
    method's seeded numpy generator: the official codes' noisy validation split (10 %), made inside the method."""
    order = torch.as_tensor(rng.permutation(n), device=device)
    k = int(round(fraction * n))
    return order[:k], order[k:]
