"""A small meta classifier that scores (sample, label) pairs as clean, trained on a golden (clean) set.

TSSD's Meta Sample Purification "trains a meta-classifier on golden data to refine semi-hard samples from
the uncertain set" (its abstract and summaries; the design is not public). Ours: a 2-layer MLP on a few
label-dependent statistics of the network's output and feature (:func:`meta_features`), fitted full-batch
on the golden images only, each with its true label (target clean) and with two wrong labels (target
noisy): a random other class and the network's most probable wrong class, so both a symmetric and a
confusable flip are represented. Weights are drawn from a given generator, so a fit is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

META_FEATURES = ("loss", "p_label", "p_max", "margin", "entropy", "similarity")


def meta_features(logits: torch.Tensor, labels: torch.Tensor, similarity: torch.Tensor,
                  loss_range: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(n, 6) features of (sample, label) pairs: the CE loss min-max normalised by ``loss_range`` (the loss
    stream's range over the train set), p(label), max p, p(label) − max other p, the entropy / log C, and
    ``similarity`` (the feature stream's normalised similarity of the sample to the label's class).

    All are defined for any label, so the same features describe a noisy training pair and a golden image
    under its true or a flipped label; the GMM posteriors are monotone in the loss and the similarity.
    """
    logits = logits.float()
    p = F.softmax(logits, 1)
    lo, hi = loss_range
    loss = (F.cross_entropy(logits, labels, reduction="none") - lo) / (hi - lo).clamp_min(1e-12)
    p_label = p.gather(1, labels.view(-1, 1)).view(-1)
    other = p.scatter(1, labels.view(-1, 1), -1.0).max(1).values
    ent = -(p * p.clamp_min(1e-12).log()).sum(1) / math.log(p.shape[1])
    return torch.stack([loss, p_label, p.max(1).values, p_label - other, ent, similarity.float()], 1)


def golden_negatives(logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Two wrong labels per golden image, stacked: a uniformly random other class, then the most probable
    wrong class under the network (a confusable flip, as asymmetric noise makes)."""
    c = logits.shape[1]
    shift = torch.randint(1, c, y.shape, device=y.device, generator=generator)
    confusing = logits.float().scatter(1, y.view(-1, 1), float("-inf")).argmax(1)
    return torch.cat([(y + shift) % c, confusing])


@dataclass
class MetaClassifier:
    """x → σ(w2·relu(W1·(x − μ)/σ + b1) + b2): a standardised 2-layer MLP."""

    mean: torch.Tensor
    std: torch.Tensor
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(((x - self.mean) / self.std) @ self.w1 + self.b1)
        return (h @ self.w2 + self.b2).view(-1)

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The probability that each (sample, label) pair is clean."""
        return torch.sigmoid(self.logit(x.float()))


def fit_meta_classifier(x: torch.Tensor, target: torch.Tensor, generator: torch.Generator, hidden: int = 32,
                        steps: int = 200, lr: float = 1e-2, weight_decay: float = 1e-4) -> MetaClassifier:
    """Fit the MLP by full-batch Adam on (features, 0/1 target), the classes weighted to equal mass."""
    x, target = x.float().detach(), target.float()
    d, dev = x.shape[1], x.device
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(d, device=dev)
    params = [torch.randn(d, hidden, device=dev, generator=generator) * math.sqrt(2.0 / d),
              torch.zeros(hidden, device=dev),
              torch.randn(hidden, 1, device=dev, generator=generator) * math.sqrt(1.0 / hidden),
              torch.zeros(1, device=dev)]
    for p in params:
        p.requires_grad_(True)
    pos = target.sum().clamp_min(1.0)
    neg = (len(target) - target.sum()).clamp_min(1.0)
    weight = torch.where(target > 0.5, len(target) / (2 * pos), len(target) / (2 * neg))
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    clf = MetaClassifier(mean, std, *params)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits(clf.logit(x), target, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return MetaClassifier(mean, std, *(p.detach() for p in params))
