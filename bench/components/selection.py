"""Sample selection: per-sample losses over the train set, the GMM clean/noisy split, small-loss masks (whole
set, or per noisy class with a quota per class)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from .. import evalbatch


@torch.no_grad()
def per_sample_loss(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                    normalize: Callable[[torch.Tensor], torch.Tensor], batch_size: int | None = None,
                    autocast=None) -> torch.Tensor:
    """Cross-entropy of every training sample under the test transform, in no-grad batches.

    ``predict`` maps a normalised batch to logits (put the network in eval mode first, as DivideMix's
    ``eval_train`` does). Returns an (N,) float tensor on the data's device; nothing is synced to the host.
    ``batch_size`` defaults to the device's evaluation batch (:func:`lnlbench.evalbatch.eval_batch_size`);
    methods pass ``ctx.eval_batch_size`` so the trial's override applies.
    """
    batch_size = batch_size or evalbatch.eval_batch_size(y.device)
    out = torch.empty(len(y), device=y.device, dtype=torch.float32)
    for s in range(0, len(y), batch_size):
        xb = normalize(x[s:s + batch_size])
        if autocast is not None:
            with autocast():
                logits = predict(xb)
        else:
            logits = predict(xb)
        out[s:s + batch_size] = F.cross_entropy(logits.float(), y[s:s + batch_size], reduction="none")
    return out


def minmax(v: torch.Tensor) -> torch.Tensor:
    """(v − min) / (max − min), the normalisation DivideMix applies before the GMM."""
    lo, hi = v.min(), v.max()
    return (v - lo) / (hi - lo).clamp_min(1e-12)


def gmm_clean_probability(losses: torch.Tensor | np.ndarray, max_iter: int = 10, tol: float = 1e-2,
                          reg_covar: float = 5e-4, seed: int = 0, high: bool = False) -> np.ndarray:
    """Posterior of the low-mean component of a 2-component GMM fitted on per-sample losses.

    The settings are DivideMix's (``GaussianMixture(n_components=2, max_iter=10, tol=1e-2,
    reg_covar=5e-4)``); normalise the losses first (``minmax``) as it does. ``seed`` fixes sklearn's
    k-means initialisation, which the official code leaves to the global RNG. ``high``: the posterior of
    the high-mean component instead (a score where clean is high, e.g. a feature similarity).
    """
    v = losses.detach().float().cpu().numpy() if isinstance(losses, torch.Tensor) else np.asarray(losses, float)
    v = v.reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    gmm.fit(v)
    prob = gmm.predict_proba(v)
    means = gmm.means_.ravel()
    return prob[:, int(np.argmax(means) if high else np.argmin(means))]


def small_loss_mask(losses: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Boolean mask of the ``int(keep_fraction · n)`` smallest losses (Co-teaching keeps
    ``num_remember = int((1 − forget_rate) · len(batch))`` samples)."""
    n = losses.shape[0]
    k = int(keep_fraction * n)
    mask = torch.zeros(n, dtype=torch.bool, device=losses.device)
    if k > 0:
        mask[torch.argsort(losses)[:k]] = True
    return mask


def per_class_lowest(scores: torch.Tensor, y: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
    """Boolean mask: in each noisy class c the ``quota[c]`` samples of lowest score (all of a shorter class;
    ties in index order). ProMix's class-wise small-loss set and UNICON's uniform selection by JSD."""
    counts = torch.bincount(y, minlength=len(quota))
    order = torch.argsort(scores, stable=True)
    order = order[torch.argsort(y[order], stable=True)]  # by class, then by score within each class
    rank = torch.arange(len(y), device=y.device) - (torch.cumsum(counts, 0) - counts)[y[order]]
    mask = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    mask[order[rank < quota.to(y.device)[y[order]]]] = True
    return mask
