"""Mixup, FMix and MixMatch mixing, sharpening, the soft-target cross-entropy, and the DivideMix family's
label co-refinement, co-guessing and confidence penalty (DivideMix, UNICON, ProMix).

FMix (Harris et al. 2020; ``ecs-vlc/FMix`` ``fmix.py``, as ProMix's ``utils/fmix.py`` copies it): a binary
mask from a low-frequency random image (Fourier spectrum decaying as 1/f^d, d = 3), its top ⌈λ·HW⌉ or
⌊λ·HW⌋ pixels (½ each) set to 1, λ ~ Beta(α, α), α = 1; x·mask + x[perm]·(1 − mask), and the loss
λ·CE(y) + (1−λ)·CE(y[perm]).

λ is drawn from the method's seeded numpy generator (``ctx.rng``) and permutations from its torch
generator (``ctx.generator``), so a trial is reproducible and resumable.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def sample_lambda(rng: np.random.Generator, alpha: float, take_max: bool = False) -> float:
    """λ ~ Beta(α, α); with ``take_max`` λ ← max(λ, 1−λ) (MixMatch/DivideMix: the mix stays near x)."""
    if alpha <= 0:
        return 1.0
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1.0 - lam) if take_max else lam


def mix(x: torch.Tensor, targets: torch.Tensor, lam: float,
        perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """λ·(x, t) + (1−λ)·(x[perm], t[perm]) for inputs and soft targets."""
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float, rng: np.random.Generator,
          generator: torch.Generator | None = None,
          take_max: bool = False) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Mixup of a batch with a random permutation of itself (Zhang et al. 2018).

    Returns the mixed inputs, the mixed soft targets, λ and the permutation (methods such as ELR+ mix
    further per-sample quantities with the same λ and permutation).
    """
    perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
    lam = sample_lambda(rng, alpha, take_max)
    xm, tm = mix(x, targets, lam, perm)
    return xm, tm, lam, perm


def mixmatch(inputs: list[torch.Tensor], targets: list[torch.Tensor], alpha: float,
             rng: np.random.Generator, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MixMatch mixing as DivideMix's code does it: concatenate every input group (labeled views, then
    unlabeled views) and their targets, and mix the whole concatenation with ONE random permutation of
    it, with λ' = max(λ, 1−λ). The first rows keep the order of ``inputs``, so the caller splits the
    labeled part (first 2B) from the unlabeled part.
    """
    x = torch.cat(inputs)
    t = torch.cat(targets)
    lam = sample_lambda(rng, alpha, take_max=True)
    perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
    xm, tm = mix(x, t, lam, perm)
    return xm, tm, lam


Net = Callable[[torch.Tensor], torch.Tensor]


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T), renormalised over classes (MixMatch's sharpening; T = 0.5 in DivideMix)."""
    q = p.pow(1.0 / temperature)
    return q / q.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """−Σ_c t_c log softmax(logits)_c, per sample, then mean (or none)."""
    loss = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    return loss.mean() if reduction == "mean" else loss


def fmix_mask(h: int, w: int, lam: float, rng: np.random.Generator, decay_power: float = 3.0) -> np.ndarray:
    """FMix's ``sample_mask`` for a given λ (max_soft 0): the (h, w) 0/1 mask of the largest pixels of a
    low-frequency image, ⌈λ·hw⌉ or ⌊λ·hw⌋ of them (½ each)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 else 1)]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
    param = rng.standard_normal((*freqs.shape, 2))
    image = np.real(np.fft.irfftn(scale * (param[..., 0] + 1j * param[..., 1]), (h, w), axes=(0, 1)))[:h, :w]
    num = math.ceil(lam * h * w) if rng.random() > 0.5 else math.floor(lam * h * w)
    mask = np.zeros(h * w)
    mask[np.argsort(-image.reshape(-1), kind="stable")[:num]] = 1.0
    return mask.reshape(h, w)


def fmix(x: torch.Tensor, alpha: float, rng: np.random.Generator, generator: torch.Generator | None = None,
         decay_power: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """FMix of a batch with a random permutation of itself: (mixed x, permutation, λ)."""
    lam = float(rng.beta(alpha, alpha))
    mask = torch.as_tensor(fmix_mask(x.shape[-2], x.shape[-1], lam, rng, decay_power), dtype=x.dtype,
                           device=x.device)
    perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
    return mask * x + (1 - mask) * x[perm], perm, lam


def fmix_loss(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """FMix's loss: λ·CE(logits, y) + (1 − λ)·CE(logits, y[perm]) (batch means; integer labels)."""
    return lam * F.cross_entropy(logits.float(), y) + (1 - lam) * F.cross_entropy(logits.float(), y[perm])


def neg_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Confidence penalty of the warm-up: mean Σ_c p_c log p_c (adding it rewards high entropy)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return (logp.exp() * logp).sum(1).mean()


@torch.no_grad()
def co_refine(net: Net, x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Label co-refinement: sharpen(w·onehot(y) + (1−w)·mean softmax of the net over both views)."""
    p = (F.softmax(net(x1).float(), 1) + F.softmax(net(x2).float(), 1)) / 2
    w = w.view(-1, 1)
    return sharpen(w * F.one_hot(y, p.shape[1]).float() + (1 - w) * p, temperature)


@torch.no_grad()
def co_guess(net: Net, other: Net, u1: torch.Tensor, u2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Label co-guessing: sharpen(mean softmax of both nets over both views); ``other`` is in eval mode."""
    p = F.softmax(net(u1).float(), 1) + F.softmax(net(u2).float(), 1)
    p = p + F.softmax(other(torch.cat([u1, u2])).float(), 1).view(2, len(u1), -1).sum(0)
    return sharpen(p / 4, temperature)
