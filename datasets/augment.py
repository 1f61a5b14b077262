"""Batched augmentation on the device: random crop with padding and horizontal flip, then normalisation.

The whole batch is augmented in a few tensor ops (pad, one gather, one select), never per sample in
Python, so CIFAR-size data stays on the GPU and the augmentation costs little next to the forward pass.
It reproduces torchvision's ``RandomCrop(size, padding=p)`` (zero fill, on the uint8 image) followed by
``RandomHorizontalFlip()``, ``ToTensor()`` and ``Normalize(mean, std)``. With ``crop`` set (images stored
larger than models see: Clothing1M's 256-px canvases) it is ``RandomCrop(crop)`` without padding + flip, and
the test transform ``CenterCrop(crop)``: the device half of Resize 256 → RandomCrop 224 → flip.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmenter:
    """Crop-with-padding + flip + normalise for uint8 NCHW batches on one device."""

    mean: torch.Tensor  # (1, C, 1, 1) float on the device, [0, 1] scale
    std: torch.Tensor
    padding: int = 4
    flip: bool = True
    channels_last: bool = False
    crop: int = 0  # > 0: random (train) / central (test) crop of this side from larger images, no padding
    random_crop: bool = True  # with ``crop``: False (augmentation off) takes the central crop in training too

    @classmethod
    def build(cls, mean, std, padding: int, flip: bool, device, channels_last: bool = False,
              crop: int | None = None, random_crop: bool = True) -> Augmenter:
        m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return cls(m, s, 0 if crop else int(padding), bool(flip), bool(channels_last), int(crop or 0),
                   bool(random_crop))

    def center(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's ``CenterCrop(crop)`` of a batch larger than ``crop`` (a view; unchanged otherwise)."""
        h, w = x.shape[-2:]
        if not self.crop or (h, w) == (self.crop, self.crop):
            return x
        top, left = int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0))
        return x[..., top:top + self.crop, left:left + self.crop]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) → float, normalised; the test-time transform.

        In place on the one float copy, in torchvision's order (÷255, −mean, ÷std: the same bits): each
        out-of-place op would allocate another batch-sized buffer, which on CPU can cost page faults (up to
        1.4× the augmentation's time). For channels_last the uint8 batch is reordered before the float copy.
        """
        x = self.center(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(torch.float32, copy=True).div_(255.0).sub_(self.mean).div_(self.std)  # never the caller's

    def crop_flip(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random crop (zero padding) and horizontal flip of a uint8 batch; returns uint8."""
        b, c, h, w = x.shape
        p = self.padding
        if self.crop and (h, w) != (self.crop, self.crop):
            return self._random_crop(x, generator) if self.random_crop else self.center(x)
        if p > 0:
            padded = F.pad(x, (p, p, p, p))  # zero fill, like torchvision's RandomCrop(padding=p)
            hp, wp = h + 2 * p, w + 2 * p
            dy = torch.randint(0, 2 * p + 1, (b, 1, 1), device=x.device, generator=generator)
            dx = torch.randint(0, 2 * p + 1, (b, 1, 1), device=x.device, generator=generator)
            rows = torch.arange(h, device=x.device).view(1, h, 1) + dy
            cols = torch.arange(w, device=x.device).view(1, 1, w) + dx
            if self.flip:  # fold the flip into the gather: read the columns right to left
                flip = torch.rand((b, 1, 1), device=x.device, generator=generator) < 0.5
                cols = torch.where(flip, cols.flip(-1), cols)
            index = (rows * wp + cols).view(b, 1, h * w).expand(b, c, h * w)
            return padded.reshape(b, c, hp * wp).gather(2, index).view(b, c, h, w)
        if self.flip:
            flip = torch.rand((b, 1, 1, 1), device=x.device, generator=generator) < 0.5
            return torch.where(flip, x.flip(-1), x)
        return x

    def _random_crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``RandomCrop(crop)`` (offsets uniform in [0, H − crop]) + flip, per sample, as one gather."""
        b, c, h, w = x.shape
        k = self.crop
        dy = torch.randint(0, h - k + 1, (b, 1, 1), device=x.device, generator=generator)
        dx = torch.randint(0, w - k + 1, (b, 1, 1), device=x.device, generator=generator)
        rows = torch.arange(k, device=x.device).view(1, k, 1) + dy
        cols = torch.arange(k, device=x.device).view(1, 1, k) + dx
        if self.flip:
            flip = torch.rand((b, 1, 1), device=x.device, generator=generator) < 0.5
            cols = torch.where(flip, cols.flip(-1), cols)
        index = (rows * w + cols).view(b, 1, k * k).expand(b, c, k * k)
        return x.reshape(b, c, h * w).gather(2, index).view(b, c, k, k)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training transform: crop + flip + normalise, uint8 in, float out."""
        return self.normalize(self.crop_flip(x, generator))
