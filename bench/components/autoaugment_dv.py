"""AutoAugment's CIFAR-10 policy (Cubuk et al. 2019) as one batched, on-device transform (UNICON's strong views).

The policy table and the ops follow ``nazmul-karim170/UNICON-Noisy-Label`` ``autoaugment.py`` (``CIFAR10Policy``,
``SubPolicy``; the DeepVoltaire implementation): per image one of 25 sub-policies, each of its two ops applied
with its probability, at the sub-policy's fixed magnitude, with a random sign for shear, translate and the
enhancements; fill colour 128. Every image draws its own sub-policy, coins and signs from the given generator;
the ops run once per (op, sub-batch), never per image. Differences from PIL: translate, shear and rotate use
bilinear sampling (PIL: nearest for translate and rotate, bicubic for shear), the enhancements blend in float
and round once, and contrast's grey level is the exact mean (PIL rounds it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_RANGES = {  # SubPolicy's ``ranges``: magnitude index 0..9 → value
    "shearX": lambda i: 0.3 * i / 9, "shearY": lambda i: 0.3 * i / 9,
    "translateX": lambda i: 150 / 331 * i / 9, "translateY": lambda i: 150 / 331 * i / 9,
    "rotate": lambda i: 30.0 * i / 9, "color": lambda i: 0.9 * i / 9, "contrast": lambda i: 0.9 * i / 9,
    "sharpness": lambda i: 0.9 * i / 9, "brightness": lambda i: 0.9 * i / 9,
    "posterize": lambda i: float(round(8 - 4 * i / 9)), "solarize": lambda i: 256 - 256 * i / 9,
    "autocontrast": lambda i: 0.0, "equalize": lambda i: 0.0, "invert": lambda i: 0.0,
}
# CIFAR10Policy: (p1, op1, magnitude index 1, p2, op2, magnitude index 2)
CIFAR10_POLICY = (
    (0.1, "invert", 7, 0.2, "contrast", 6), (0.7, "rotate", 2, 0.3, "translateX", 9),
    (0.8, "sharpness", 1, 0.9, "sharpness", 3), (0.5, "shearY", 8, 0.7, "translateY", 9),
    (0.5, "autocontrast", 8, 0.9, "equalize", 2), (0.2, "shearY", 7, 0.3, "posterize", 7),
    (0.4, "color", 3, 0.6, "brightness", 7), (0.3, "sharpness", 9, 0.7, "brightness", 9),
    (0.6, "equalize", 5, 0.5, "equalize", 1), (0.6, "contrast", 7, 0.6, "sharpness", 5),
    (0.7, "color", 7, 0.5, "translateX", 8), (0.3, "equalize", 7, 0.4, "autocontrast", 8),
    (0.4, "translateY", 3, 0.2, "sharpness", 6), (0.9, "brightness", 6, 0.2, "color", 8),
    (0.5, "solarize", 2, 0.0, "invert", 3), (0.2, "equalize", 0, 0.6, "autocontrast", 0),
    (0.2, "equalize", 8, 0.6, "equalize", 4), (0.9, "color", 9, 0.6, "equalize", 6),
    (0.8, "autocontrast", 4, 0.2, "solarize", 8), (0.1, "brightness", 3, 0.7, "color", 0),
    (0.4, "solarize", 5, 0.9, "autocontrast", 3), (0.9, "translateY", 9, 0.7, "translateY", 9),
    (0.9, "autocontrast", 2, 0.8, "solarize", 3), (0.8, "equalize", 8, 0.1, "invert", 3),
    (0.7, "translateY", 9, 0.9, "autocontrast", 1),
)
FILL = 128.0


def _gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _blend(img: torch.Tensor, degenerate: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageEnhance``: degenerate + f·(img − degenerate), clipped to [0, 255]."""
    return (degenerate + f.view(-1, 1, 1, 1) * (img - degenerate)).clamp(0, 255)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) inside, the original on the 1-pixel border."""
    k = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    k[1, 1] = 5.0
    k = (k / 13).expand(x.shape[1], 1, 3, 3)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = F.conv2d(x, k, groups=x.shape[1])
    return out


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Sample x through per-image 2×3 maps of normalised output → input coordinates, outside filled with 128."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL


def _geometric(op: str, x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    if op == "shearX":  # PIL's output→input map x' = x + m·y about the top-left corner, in normalised units
        theta[:, 0, 1] = theta[:, 0, 2] = mag * h / w
    elif op == "shearY":
        theta[:, 1, 0] = theta[:, 1, 2] = mag * w / h
    elif op == "translateX":  # input x = output x + m·width
        theta[:, 0, 2] = 2 * mag
    elif op == "translateY":
        theta[:, 1, 2] = 2 * mag
    else:  # rotate: PIL rotates counter-clockwise by m degrees about the centre
        a = mag * math.pi / 180
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a) * h / w
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) * w / h, torch.cos(a)
    return _affine(x, theta)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` per image and channel (the last non-empty histogram bin excluded from the step)."""
    b, c, h, w = x.shape
    v = x.round().long().clamp(0, 255).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, v, torch.ones_like(v, dtype=torch.float))
    last = 255 - torch.flip(hist > 0, [1]).float().argmax(1)  # the highest value present
    step = torch.div(hist.sum(1) - hist.gather(1, last.view(-1, 1)).squeeze(1), 255, rounding_mode="floor")
    lut = torch.div(torch.cumsum(hist, 1) - hist + torch.div(step, 2, rounding_mode="floor").view(-1, 1),
                    step.clamp_min(1).view(-1, 1), rounding_mode="floor").clamp(0, 255)
    out = lut.gather(1, v).view(b, c, h, w)
    return torch.where((step > 0).view(b, c, 1, 1), out, x)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp_min(1e-6)
    return torch.where(hi > lo, (x - lo) * scale, x).clamp(0, 255)


def apply_op(op: str, x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """One policy op on float images (0–255), ``mag`` the per-image signed magnitude."""
    if op in ("shearX", "shearY", "translateX", "translateY", "rotate"):
        return _geometric(op, x, mag)
    if op == "brightness":
        return _blend(x, torch.zeros_like(x), 1 + mag)
    if op == "color":
        return _blend(x, _gray(x).expand_as(x), 1 + mag)
    if op == "contrast":
        return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), 1 + mag)
    if op == "sharpness":
        return _blend(x, _smooth(x), 1 + mag)
    if op == "posterize":  # keep the top ``bits`` bits
        drop = (2 ** (8 - mag)).view(-1, 1, 1, 1)
        return torch.div(x.round(), drop, rounding_mode="floor") * drop
    if op == "solarize":
        return torch.where(x >= mag.view(-1, 1, 1, 1), 255 - x, x)
    if op == "autocontrast":
        return _autocontrast(x)
    if op == "equalize":
        return _equalize(x)
    return 255 - x  # invert


_SIGNED = {"shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness"}


_OPS = tuple(sorted({pol[1] for pol in CIFAR10_POLICY} | {pol[4] for pol in CIFAR10_POLICY}))


def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(25, 2) tensors of each sub-policy slot's probability, op index into ``_OPS`` and magnitude."""
    prob = torch.tensor([[pol[0], pol[3]] for pol in CIFAR10_POLICY], device=device)
    ops = torch.tensor([[_OPS.index(pol[1]), _OPS.index(pol[4])] for pol in CIFAR10_POLICY], device=device)
    mags = torch.tensor([[_RANGES[pol[1]](pol[2]), _RANGES[pol[4]](pol[5])] for pol in CIFAR10_POLICY],
                        device=device)
    return prob, ops, mags


def cifar10_autoaugment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float (B, 3, H, W) on the 0–255 scale, each image through its own sub-policy.

    Per slot, each op runs once on the images whose drawn sub-policy applies it (13 ops × 2 slots)."""
    out = x.float()
    b, dev = x.shape[0], x.device
    prob, ops, mags = _tables(dev)
    pick = torch.randint(len(CIFAR10_POLICY), (b,), device=dev, generator=generator)
    coins = torch.rand(b, 2, device=dev, generator=generator)
    signs = torch.where(torch.rand(b, 2, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    for slot in (0, 1):
        applied = coins[:, slot] < prob[pick, slot]
        op_of, mag_of = ops[pick, slot], mags[pick, slot]
        for k, op in enumerate(_OPS):
            rows = torch.nonzero(applied & (op_of == k)).squeeze(1)
            if rows.numel() == 0:
                continue
            mag = mag_of[rows] * (signs[rows, slot] if op in _SIGNED else 1.0)
            out.index_copy_(0, rows, apply_op(op, out[rows], mag).round())
    return out
