"""Two-stream sample division: the feature-space stream (PSDC) beside the loss-space one (DivideMix).

TSSD's Parallel Sample Division (Bai et al., TMM 2025) splits the noisy training set into a certain clean
set, a certain noisy set and an uncertain rest by the agreement of two clean probabilities: DivideMix's
small-loss GMM posterior and, per noisy class, a GMM on how similar each sample's penultimate feature is
to the other samples of its class (the first author's PSDC, arXiv 2404.01853: "for each group with the
same label ... calculate the cosine distance between all sample pairs, then summarize the distribution
matrix by row and divide all the samples into two groups using Gaussian mixture model").
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .selection import gmm_clean_probability, minmax


def class_mean_similarity(feats: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """a_i = mean over j ≠ i with y_j = y_i of cos(f_i, f_j): the row means of each class's similarity matrix.

    With unit vectors u_i the row sum of S = U_c U_cᵀ without its diagonal is u_i·s_c − 1, s_c = Σ_{j∈c} u_j,
    so the row means come from the C class sums without forming any n_c × n_c matrix: peak memory is the
    (N, d) normalised features plus a (C, d) table, whatever the class sizes. A class of one sample gets 0.
    """
    u = F.normalize(feats.float(), dim=1)
    sums = torch.zeros(num_classes, u.shape[1], device=u.device, dtype=u.dtype).index_add_(0, y, u)
    counts = torch.bincount(y, minlength=num_classes).to(u.dtype)
    n = counts[y]
    return torch.where(n > 1, ((u * sums[y]).sum(1) - 1.0) / (n - 1).clamp_min(1), torch.zeros_like(n))


def feature_clean_probability(score: torch.Tensor, y: torch.Tensor, num_classes: int,
                              seed: Callable[[], int]) -> torch.Tensor:
    """Per noisy class: min-max normalise the similarity scores, fit a 2-component GMM, take the posterior
    of the high-mean component (clean samples sit in the dense core of their labelled class). A class with
    fewer than 3 samples cannot be split: its samples get 0.5 (uncertain). ``seed()`` draws each GMM's seed.
    """
    out = torch.full_like(score, 0.5, dtype=torch.float32)
    yc = y.cpu().numpy()
    for c in range(num_classes):
        idx = np.flatnonzero(yc == c)
        if len(idx) < 3:
            continue
        ix = torch.from_numpy(idx).to(score.device)
        prob = gmm_clean_probability(minmax(score[ix]), seed=seed(), high=True)
        out[ix] = torch.from_numpy(prob).float().to(score.device)
    return out


def parallel_division(w_loss: torch.Tensor, w_feat: torch.Tensor,
                      threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(certain clean P, certain noisy Q, uncertain U) boolean masks from the two streams' agreement:
    P: both clean probabilities above ``threshold``; Q: both below 1 − ``threshold``; U: the rest."""
    clean = (w_loss > threshold) & (w_feat > threshold)
    noisy = (w_loss < 1 - threshold) & (w_feat < 1 - threshold)
    return clean, noisy, ~(clean | noisy)
