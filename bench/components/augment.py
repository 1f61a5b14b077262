"""SimCLR-style "complex" augmentation as one batched, on-device transform (MOIT's contrastive views).

The official MOIT transform (``RandomResizedCrop``, flip, ``ColorJitter`` with p 0.8, ``RandomGrayscale``
with p 0.2) applied per sample on the device, each sample with its own draw; crop + resize + flip is one
``grid_sample``. A method part (like mixing or selection), so it lives among the components, not with the
datasets' transforms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LnlError


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of float RGB (B, 3, H, W) → (B, 1, H, W), torchvision's ``rgb_to_grayscale``."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * a + (1.0 - f) * b).clamp_(0.0, 1.0)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB → HSV, h ← (h + shift) mod 1, → RGB (torchvision's tensor ``adjust_hue``), float in [0, 1]."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    h = ((h + shift.view(-1, 1, 1)) % 1.0) * 6.0
    # HSV → RGB without a lookup table: channel n of (R, G, B) = v − v·s·clip(min(k, 4 − k), 0, 1),
    # k = (n + 6h) mod 6 with n = 5, 3, 1 (the same values as the sector formula)
    out = [maxc - maxc * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
           for k in ((n + h) % 6.0 for n in (5.0, 3.0, 1.0))]
    return torch.stack(out, 1)


@dataclass(frozen=True)
class ComplexAugment:
    """MOIT's "complex" training transform for uint8 RGB batches, every sample with its own random draw.

    torchvision's ``RandomResizedCrop(size)`` (scale 0.08–1, ratio 3/4–4/3, 10 tries then the whole
    image; bilinear resize), ``RandomHorizontalFlip()``, ``RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)],
    p=0.8)`` (brightness, contrast, saturation, hue in a random order per sample) and
    ``RandomGrayscale(p=0.2)``, as a few batched tensor ops on the device (one ``grid_sample`` for the crop,
    resize and flip). Returns float images on the 0–255 scale, ready for ``Augmenter.normalize``.
    Differences from the PIL pipeline: colour ops run in float without the uint8 rounding between steps,
    and the jitter uses the tensor formulas (PIL's ``ImageEnhance`` rounds the contrast mean).
    """

    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    p_jitter: float = 0.8
    p_gray: float = 0.2
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def _crop_boxes(self, b: int, h: int, w: int, dev, gen) -> torch.Tensor:
        """(B, 4) boxes (x0, y0, width, height) in pixels, torchvision's ``RandomResizedCrop.get_params``."""
        area = torch.empty(b, 10, device=dev).uniform_(*self.scale, generator=gen) * (h * w)
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(torch.empty(b, 10, device=dev).uniform_(lo, hi, generator=gen))
        cw = torch.round(torch.sqrt(area * aspect))
        ch = torch.round(torch.sqrt(area / aspect))
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = ok.float().argmax(1, keepdim=True)
        any_ok = ok.any(1)
        cw = torch.where(any_ok, cw.gather(1, first).squeeze(1), torch.full((b,), float(w), device=dev))
        ch = torch.where(any_ok, ch.gather(1, first).squeeze(1), torch.full((b,), float(h), device=dev))
        u = torch.rand(b, 2, device=dev, generator=gen)
        x0 = torch.floor(u[:, 0] * (w - cw + 1))
        y0 = torch.floor(u[:, 1] * (h - ch + 1))
        return torch.stack([x0, y0, cw, ch], 1)

    def _crop_flip(self, x: torch.Tensor, gen) -> torch.Tensor:
        b, _, h, w = x.shape
        box = self._crop_boxes(b, h, w, x.device, gen)
        flip = torch.rand(b, device=x.device, generator=gen) < 0.5
        sx = box[:, 2] / w * torch.where(flip, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = sx
        theta[:, 0, 2] = (2 * box[:, 0] + box[:, 2]) / w - 1
        theta[:, 1, 1] = box[:, 3] / h
        theta[:, 1, 2] = (2 * box[:, 1] + box[:, 3]) / h - 1
        grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: torch.Tensor, gen) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        bri, con, sat, hue = self.jitter
        factors = [torch.empty(b, device=dev).uniform_(1 - v, 1 + v, generator=gen) for v in (bri, con, sat)]
        factors.append(torch.empty(b, device=dev).uniform_(-hue, hue, generator=gen))
        apply = torch.rand(b, device=dev, generator=gen) < self.p_jitter
        order = torch.rand(b, 4, device=dev, generator=gen).argsort(1)  # a random op order per sample
        for step in range(4):
            for op in range(4):
                rows = torch.nonzero(apply & (order[:, step] == op)).squeeze(1)
                if rows.numel() == 0:
                    continue
                xi, f = x[rows], factors[op][rows].view(-1, 1, 1, 1)
                if op == 0:
                    xi = (xi * f).clamp_(0.0, 1.0)
                elif op == 1:
                    xi = _blend(xi, _gray(xi).mean((1, 2, 3), keepdim=True), f)
                elif op == 2:
                    xi = _blend(xi, _gray(xi), f)
                else:
                    xi = _shift_hue(xi, f.view(-1))
                x.index_copy_(0, rows, xi)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, 3, H, W) → augmented float (B, 3, H, W) on the 0–255 scale."""
        if x.shape[1] != 3:
            raise LnlError(f"complex augmentation needs RGB images, got {x.shape[1]} channel(s); "
                           "use augmentation=simple")
        out = self._crop_flip(x.float().div_(255.0), generator)
        out = self._jitter(out, generator)
        gray = torch.rand(x.shape[0], device=x.device, generator=generator) < self.p_gray
        out = torch.where(gray.view(-1, 1, 1, 1), _gray(out).expand_as(out), out)
        return out.mul_(255.0)
