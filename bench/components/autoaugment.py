"""Strong augmentation as batched on-device ops: AutoAugment's CIFAR-10 policy and a RandAugment pool, Cutout.

Every sample draws its own sub-policy (or ops), probabilities, magnitudes and signs. On an accelerator every op
runs on the whole batch as tensor ops, the sample's own op picked by ``torch.where`` (no per-sample Python, no
host sync); on a CPU each op runs on its own samples only (:func:`apply_ops` ``dispatch``; same images, same
draws, about 10× less work).
The ops follow PIL's (what the official pipelines call on each image) on uint8-valued images: ``ImageOps``
autocontrast / equalize / invert / posterize / solarize, ``ImageEnhance`` brightness / color / contrast /
sharpness (blend with the degenerate image, truncated to uint8 as PIL's ``Image.blend``), and the affine ops
(shear, translate, rotate about the centre) as ``Image.transform(AFFINE)`` / ``Image.rotate`` at pixel centres:
nearest sampling, or PIL's bicubic (a = −1 cubic, border-clamped taps, truncated) for UNICON's shears, with a
fill colour (PIL's default 0; UNICON's 128).

Policies (:class:`AutoAugmentPolicy`; the two official readings of the same paper policy differ in more than
magnitudes, so each keeps its own behaviour):
- :data:`SOP_POLICY` (SOP+): ``shengliu66/SOP`` ``data_loader/augmentation_archive.py`` ``autoaug_paper_cifar10``
  through ``autoaug2arsaug`` (levels 0–9 of 10: shear 0.3·l/10, translate l pixels, rotate ⌊30·l/10⌋°,
  solarize at 256 − ⌊25.6·l⌋, posterize to 4 − ⌊0.4·l⌋ bits, enhance factors 0.1 + 0.18·l); shear, translate
  and rotate take a random sign (``augmentations.py``, ``random_mirror``); nearest sampling, fill 0.
- :data:`UNICON_POLICY` (UNICON): ``nazmul-karim170/UNICON-Noisy-Label`` ``autoaugment.py`` (DeepVoltaire's
  ``CIFAR10Policy`` / ``SubPolicy``): magnitude index i of ``linspace`` over 10 (shear 0.3·i/9, translate
  (150/331)·i/9 of the width / height, rotate 30·i/9°, posterize round(8 − 4i/9) bits, solarize at
  256 − 256i/9, enhance factors 1 ± 0.9·i/9); random signs on shear, translate and the enhancements, never
  on rotate (counter-clockwise); bicubic shears, nearest translate and rotate, fill 128; one table cell
  differs from SOP's (sub-policy 13's colour level 8, SOP 6).
- :func:`randaugment_ops` (DISC): ``JackYFL/DISC`` ``datasets/randaugment.py`` ``RandAugmentwogeo(n=2, m=5)`` on
  ``new_augment_pool``: n ops drawn with replacement, each with magnitude v ∈ {1, …, m − 1} and applied with
  probability 1/2, then ``CutoutAbs`` of ⌊0.15·size⌋ pixels in grey (127).
- :func:`randaugment_fixmatch` (ProMix): ``Justherozen/ProMix`` ``utils/randaug.py`` ``RandomAugment(3, 5)``
  (FixMatch's pool): n ops drawn with replacement from 14, each always applied with a magnitude uniform in
  its range (m unused), then ``Cutout`` of U·½ of the width in the colour (125, 123, 114).

Differences from PIL, all sub-pixel or rounding: greyscale is round(0.299R + 0.587G + 0.114B) (PIL's integer
formula rounds the same way up to ties); ``rotate`` builds PIL's matrix in float64 without its 15-digit
rounding (a pixel on an edge may land on the other side); a sub-policy's op applies when U < p (SOP's code
U ≤ p; equal only on a measure-zero draw). Single-channel images take every op; ``color`` is the identity on
them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

# op ids (a per-sample integer picks one); GEOMETRIC ops share one affine pass per slot
OPS = ("identity", "autocontrast", "equalize", "invert", "posterize", "solarize", "solarize_add", "brightness",
       "color", "contrast", "sharpness", "cutout", "shear_x", "shear_y", "translate_x", "translate_y", "rotate")
OP = {name: i for i, name in enumerate(OPS)}
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
SIGNED = GEOMETRIC + ("solarize_add",)


def _is(op: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """Whether each sample's op id is one of ``names``."""
    return torch.stack([op == OP[n] for n in names]).any(0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` of uint8-valued float (B, C, H, W) → (B, 1, H, W) (C = 1: the image)."""
    if x.shape[1] == 1:
        return x
    return torch.round(0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(degenerate: torch.Tensor, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``Image.blend(degenerate, x, f)``: degenerate + f·(x − degenerate), clipped and truncated to uint8."""
    return torch.floor((degenerate + f.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0.0, 255.0))


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast``: each channel stretched from its [min, max] to [0, 255] (truncated)."""
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1.0)
    return torch.where(hi > lo, torch.floor(((x - lo) * scale).clamp(0.0, 255.0)), x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize``: per channel, lut[i] = (step//2 + #pixels below i) // step, step = (N − h[last])//255."""
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
    last = torch.where(hist > 0, torch.arange(256, device=x.device), -1).amax(1, keepdim=True)
    step = (h * w - hist.gather(1, last)) // 255
    below = hist.cumsum(1) - hist
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    ident = (step == 0) | ((hist > 0).sum(1, keepdim=True) <= 1)
    out = torch.where(ident, flat, lut.gather(1, flat))
    return out.view(b, c, h, w).to(x.dtype)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``ImageOps.posterize``: keep the top ``bits`` bits (0 bits: black)."""
    q = torch.pow(2.0, 8.0 - bits.clamp(0, 8)).view(-1, 1, 1, 1)
    return torch.floor(x / q) * q


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``ImageOps.solarize``: values ≥ threshold inverted."""
    return torch.where(x >= threshold.view(-1, 1, 1, 1), 255.0 - x, x)


def sharpen_degenerate(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageFilter.SMOOTH`` (3×3 kernel 1,1,1 / 1,5,1 / 1,1,1 ÷ 13, rounded), border pixels kept."""
    c = x.shape[1]
    k = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    k[1, 1] = 5.0
    k = (k / 13.0).expand(c, 1, 3, 3)
    inner = torch.round(F.conv2d(x, k, groups=c))
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _sources(mat: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each output pixel reads the input under PIL's affine coefficients (B, 6): output pixel (x, y) reads
    (a·x' + b·y' + c, d·x' + e·y' + f) at its centre x' = x + 0.5; and whether that point lies inside."""
    ys, xs = torch.meshgrid(torch.arange(h, device=mat.device, dtype=mat.dtype) + 0.5,
                            torch.arange(w, device=mat.device, dtype=mat.dtype) + 0.5, indexing="ij")
    m = mat.view(-1, 6, 1, 1)
    xin = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    yin = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    return xin, yin, (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)


def _taps(x: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
    """x at integer source pixels (B, H, W), clamped to the border (PIL's XCLIP / YCLIP)."""
    b, ch, h, w = x.shape
    idx = (yi.long().clamp(0, h - 1) * w + xi.long().clamp(0, w - 1)).view(b, 1, h * w).expand(b, ch, h * w)
    return x.reshape(b, ch, h * w).gather(2, idx).view(b, ch, h, w)


def affine_nearest(x: torch.Tensor, mat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``Image.transform(AFFINE, (a, b, c, d, e, f), NEAREST, fillcolor=fill)`` (also ``Image.rotate``): the
    source point of :func:`_sources`, floored; outside → ``fill``."""
    xin, yin, valid = _sources(mat, x.shape[2], x.shape[3])
    out = _taps(x, torch.floor(xin), torch.floor(yin))
    return torch.where(valid.unsqueeze(1), out, torch.full((), fill, dtype=x.dtype, device=x.device))


def _cubic(v1, v2, v3, v4, d: torch.Tensor) -> torch.Tensor:
    """PIL's ``BICUBIC`` interpolation polynomial (``libImaging/Geometry.c``; the a = −1 cubic convolution)."""
    d = d.unsqueeze(1)
    return v2 + d * ((v3 - v1) + d * ((2 * (v1 - v2) + v3 - v4) + d * (v2 - v1 - v3 + v4)))


def affine_bicubic(x: torch.Tensor, mat: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``Image.transform(AFFINE, …, BICUBIC, fillcolor=fill)`` (UNICON's shears): a source point inside the image
    takes the 4×4 cubic of its neighbours (border-clamped) about (x − ½, y − ½), rounded to uint8; outside → fill."""
    xin, yin, valid = _sources(mat, x.shape[2], x.shape[3])
    fx, fy = xin - 0.5, yin - 0.5
    x0, y0 = torch.floor(fx), torch.floor(fy)
    rows = [_cubic(*(_taps(x, x0 + j, y0 + i) for j in (-1, 0, 1, 2)), (fx - x0).to(x.dtype)) for i in (-1, 0, 1, 2)]
    out = torch.floor(_cubic(*rows, (fy - y0).to(x.dtype)).clamp(0.0, 255.0))
    return torch.where(valid.unsqueeze(1), out, torch.full((), fill, dtype=x.dtype, device=x.device))


def affine_matrices(op: torch.Tensor, mag: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 6) PIL affine coefficients of each sample's geometric op (identity for the others)."""
    mag = mag.double()
    mat = torch.zeros(op.shape[0], 6, dtype=torch.float64, device=op.device)
    mat[:, 0] = mat[:, 4] = 1.0
    mat[:, 1] = torch.where(op == OP["shear_x"], mag, 0.0)
    mat[:, 3] = torch.where(op == OP["shear_y"], mag, 0.0)
    mat[:, 2] = torch.where(op == OP["translate_x"], mag, 0.0)
    mat[:, 5] = torch.where(op == OP["translate_y"], mag, 0.0)
    rot = op == OP["rotate"]
    a = -torch.deg2rad(torch.where(rot, mag, 0.0))
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = w / 2.0, h / 2.0
    rmat = torch.stack([cos, sin, -cos * cx - sin * cy + cx, -sin, cos, sin * cx - cos * cy + cy], 1)
    return torch.where(rot[:, None], rmat, mat)


def cutout_abs(x: torch.Tensor, size: torch.Tensor, fill: float | tuple[float, ...],
               generator: torch.Generator | None, u: torch.Tensor | None = None) -> torch.Tensor:
    """``CutoutAbs``: a size×size box from (⌊max(0, U·w − size/2)⌋, …) clipped to the image, set to ``fill``
    (a grey level, or one value per channel). ``u`` (B, 2): the uniforms, else drawn from ``generator``."""
    b, _, h, w = x.shape
    if u is None:
        u = torch.rand(b, 2, device=x.device, generator=generator)
    x0 = torch.floor((u[:, 0] * w - size / 2).clamp(min=0)).view(-1, 1, 1)
    y0 = torch.floor((u[:, 1] * h - size / 2).clamp(min=0)).view(-1, 1, 1)
    s = size.view(-1, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    box = (cols >= x0) & (cols < x0 + s) & (rows >= y0) & (rows < y0 + s) & (s > 0)
    value = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    value = value.view(1, -1, 1, 1)[:, :x.shape[1]] if value.dim() else value
    return torch.where(box.unsqueeze(1), value, x)


def cutout_centered(x: torch.Tensor, length: int, fill: float, generator: torch.Generator | None) -> torch.Tensor:
    """DARTS' ``CutoutDefault(length)`` (SOP+): rows and columns [c − length//2, c + length//2) about a uniform
    pixel c, clipped, set to ``fill`` (0 on normalised images, as the official transform runs it last)."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=generator)
    half = length // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    box = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
    return torch.where(box.unsqueeze(1), torch.full((), fill, dtype=x.dtype, device=x.device), x)


# the photometric ops as (images, magnitudes (B,), cutout uniforms (B, 2), cutout fill) → images; each sample's
# result depends on that sample alone, so an op runs on the whole batch or on its own rows alike
PHOTOMETRIC: dict[str, Callable] = {
    "autocontrast": lambda x, m, u, cf: autocontrast(x),
    "equalize": lambda x, m, u, cf: equalize(x),
    "invert": lambda x, m, u, cf: 255.0 - x,
    "posterize": lambda x, m, u, cf: posterize(x, m),
    "solarize": lambda x, m, u, cf: solarize(x, m),
    "solarize_add": lambda x, m, u, cf: solarize((x + m.view(-1, 1, 1, 1)).clamp(0.0, 255.0),
                                                 torch.full_like(m, 128.0)),
    "brightness": lambda x, m, u, cf: _blend(torch.zeros_like(x), x, m),
    "color": lambda x, m, u, cf: _blend(_gray(x).expand_as(x), x, m),
    "contrast": lambda x, m, u, cf: _blend(torch.round(_gray(x).mean((1, 2, 3), keepdim=True)).expand_as(x),
                                           x, m),
    "sharpness": lambda x, m, u, cf: _blend(sharpen_degenerate(x), x, m),
    "cutout": lambda x, m, u, cf: cutout_abs(x, m, cf, None, u),
}


def apply_ops(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None = None,
              cutout_fill: float = 127.0, fill: float = 0.0, shear: str = "nearest",
              dispatch: bool | None = None) -> torch.Tensor:
    """One op per sample (``op`` ids into :data:`OPS`, magnitudes in the op's own unit: factor, bits,
    threshold, pixels, degrees, shear) on uint8-valued float images; identity where ``op`` is 0.

    ``fill`` is the geometric ops' outside colour (PIL's default 0; UNICON's 128); ``shear`` their sampling
    for shear_x / shear_y, ``"nearest"`` (PIL's default) or ``"bicubic"`` (UNICON's); the others are nearest.

    ``dispatch`` (default: on a CPU): run each op on its own samples only (one ``nonzero`` per op, a host
    sync, free on a CPU but a stall of an accelerator's queue), instead of every op on the whole batch picked
    by ``torch.where``. Same result either way; the cutout uniforms are drawn for the whole batch in both."""
    if shear not in ("nearest", "bicubic"):
        raise ValueError(f"shear sampling must be 'nearest' or 'bicubic', got {shear!r}")
    b, _, h, w = x.shape
    mat = affine_matrices(op, mag, h, w)  # in float64 (a float64 ``mag`` keeps PIL's edges exactly)
    mag = mag.to(x.dtype)
    u = torch.rand(b, 2, device=x.device, generator=generator)  # Cutout's box corners (drawn as before)
    bicubic = _is(op, ("shear_x", "shear_y")) if shear == "bicubic" else torch.zeros_like(op, dtype=torch.bool)
    groups = [(_is(op, GEOMETRIC) & ~bicubic, lambda xs, ms, mt, us: affine_nearest(xs, mt, fill)),
              (bicubic, lambda xs, ms, mt, us: affine_bicubic(xs, mt, fill))]
    groups += [(op == OP[name], lambda xs, ms, mt, us, f=fn: f(xs, ms, us, cutout_fill))
               for name, fn in PHOTOMETRIC.items()]
    if dispatch is None:
        dispatch = x.device.type == "cpu"
    out = x.clone() if dispatch else x
    for mask, fn in groups:
        if dispatch:
            rows = mask.nonzero().squeeze(1)
            if len(rows):
                out[rows] = fn(x[rows], mag[rows], mat[rows], u[rows])
        else:
            out = torch.where(mask.view(-1, 1, 1, 1), fn(x, mag, mat, u), out)
    return out


# AutoAugment's CIFAR-10 policy as (op, probability, level 0–9) pairs (SOP's ``autoaug_paper_cifar10``)
AUTOAUG_CIFAR10 = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)), (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)), (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)), (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)), (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)), (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)), (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)), (("brightness", 0.9, 6), ("color", 0.2, 6)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)), (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.6, 4)), (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)), (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)), (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)), (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, 1)),
)
# DeepVoltaire's ``CIFAR10Policy`` (UNICON): the paper's table, where SOP's differs in one cell (sub-policy 13's
# colour level: 8, SOP 6)
AUTOAUG_CIFAR10_DV = AUTOAUG_CIFAR10[:13] + ((("brightness", 0.9, 6), ("color", 0.2, 8)),) + AUTOAUG_CIFAR10[14:]


def autoaug_magnitude(name: str, level: int) -> float:
    """SOP's ``autoaug2arsaug`` mapping of a level (0–9 of 10) to the op's unit (translate: level pixels)."""
    table = {"shear_x": 0.3 * level / 10, "shear_y": 0.3 * level / 10, "rotate": int(30 * level / 10),
             "solarize": 256 - int(256 * level / 10), "posterize": 4 - int(4 * level / 10),
             "translate_x": float(level), "translate_y": float(level)}
    return float(table.get(name, 0.1 + 1.8 * level / 10))


def dv_magnitude(name: str, level: int) -> float:
    """DeepVoltaire's ``SubPolicy.ranges`` (index 0–9 into ``linspace(lo, hi, 10)``): shear 0.3·i/9, translate
    (150/331)·i/9 of the image size, rotate 30·i/9°, posterize round(8 − 4i/9) bits, solarize at 256 − 256i/9,
    enhancements the offset 0.9·i/9 from factor 1 (the sign is drawn per image)."""
    table = {"shear_x": 0.3 * level / 9, "shear_y": 0.3 * level / 9, "rotate": 30.0 * level / 9,
             "translate_x": 150 / 331 * level / 9, "translate_y": 150 / 331 * level / 9,
             "posterize": float(round(8 - 4 * level / 9)), "solarize": 256 - 256 * level / 9}
    return float(table.get(name, 0.9 * level / 9))


@dataclass(frozen=True)
class AutoAugmentPolicy:
    """One implementation's reading of AutoAugment's CIFAR-10 policy: its table, level mapping, which ops draw
    a random sign, the geometric fill and shear sampling, whether the enhancement magnitude is an offset from
    factor 1 (DeepVoltaire: 1 ± m) and whether translate is a fraction of the image size."""

    table: tuple
    magnitude: Callable[[str, int], float]
    signed: tuple[str, ...]
    fill: float = 0.0
    shear: str = "nearest"
    enhance_offset: bool = False
    relative_translate: bool = False


ENHANCE = ("brightness", "color", "contrast", "sharpness")
# the two official readings (module docstring): SOP+'s and UNICON's (DeepVoltaire's ``SubPolicy``)
SOP_POLICY = AutoAugmentPolicy(AUTOAUG_CIFAR10, autoaug_magnitude, GEOMETRIC)
UNICON_POLICY = AutoAugmentPolicy(AUTOAUG_CIFAR10_DV, dv_magnitude,
                                  ("shear_x", "shear_y", "translate_x", "translate_y") + ENHANCE, fill=128.0,
                                  shear="bicubic", enhance_offset=True, relative_translate=True)


def _table(policy) -> torch.Tensor:
    """(P, 2, 3) float table of a policy: op id, probability, magnitude per slot."""
    return torch.tensor([[[OP[n], p, policy.magnitude(n, lv)] for n, p, lv in sub] for sub in policy.table],
                        dtype=torch.float64)


def _signed(op: torch.Tensor, mag: torch.Tensor, generator: torch.Generator | None,
            names: tuple[str, ...] = SIGNED) -> torch.Tensor:
    """A random sign (½ each) on the magnitudes of the ops in ``names``."""
    flip = torch.rand(op.shape, device=op.device, generator=generator) < 0.5
    return torch.where(_is(op, names) & flip, -mag, mag)


def autoaugment_cifar10(x: torch.Tensor, generator: torch.Generator | None = None,
                        policy: AutoAugmentPolicy = SOP_POLICY) -> torch.Tensor:
    """AutoAugment's CIFAR-10 policy on a uint8 batch (one sub-policy per image, each op applied with its
    probability) as ``policy`` implements it (:data:`SOP_POLICY`, :data:`UNICON_POLICY`); returns uint8."""
    table = _table(policy).to(x.device)
    b, _, h, w = x.shape
    pick = torch.randint(0, table.shape[0], (b,), device=x.device, generator=generator)
    out = x.float()
    for slot in range(2):
        row = table[pick, slot]
        op = row[:, 0].long()
        keep = torch.rand(b, device=x.device, generator=generator, dtype=torch.float64) < row[:, 1]
        op = torch.where(keep, op, 0)
        mag = _signed(op, row[:, 2], generator, policy.signed)
        if policy.enhance_offset:
            mag = torch.where(_is(op, ENHANCE), 1.0 + mag, mag)
        if policy.relative_translate:
            mag = mag * torch.where(op == OP["translate_x"], w, torch.where(op == OP["translate_y"], h, 1))
        out = apply_ops(out, op, mag, generator, fill=policy.fill, shear=policy.shear)
    return out.to(torch.uint8)


# DISC's ``new_augment_pool``: (op, max_v, bias); magnitude = v·max_v/10 + bias (int for the integer ops)
DISC_POOL = (("autocontrast", 0, 0), ("brightness", 1.8, 0.1), ("color", 1.8, 0.1), ("contrast", 1.8, 0.1),
             ("cutout", 0.1, 0), ("equalize", 0, 0), ("invert", 0, 0), ("posterize", 4, 4), ("rotate", 30, 0),
             ("sharpness", 1.8, 0.1), ("shear_x", 0.1, 0), ("shear_y", 0.1, 0), ("solarize", 256, 0),
             ("solarize_add", 110, 0), ("translate_x", 0.05, 0), ("translate_y", 0.05, 0))
_INT_OPS = ("posterize", "rotate", "solarize", "solarize_add")


def randaugment_ops(x: torch.Tensor, n: int = 2, m: int = 5, generator: torch.Generator | None = None,
                    pool=DISC_POOL) -> torch.Tensor:
    """DISC's ``RandAugmentwogeo(n, m)`` on a uint8 batch: n pool ops per image (each with p ½, v ∈ [1, m)),
    then a grey ``CutoutAbs`` of ⌊0.15·size⌋ pixels; returns uint8."""
    b, _, h, w = x.shape
    size = min(h, w)
    ids = torch.tensor([OP[name] for name, _, _ in pool], device=x.device)
    max_v = torch.tensor([mv for _, mv, _ in pool], device=x.device, dtype=torch.float64)
    bias = torch.tensor([bs for _, _, bs in pool], device=x.device, dtype=torch.float64)
    integer = torch.tensor([name in _INT_OPS for name, _, _ in pool], device=x.device)
    rel = torch.tensor([name in ("cutout", "translate_x", "translate_y") for name, _, _ in pool], device=x.device)
    out = x.float()
    for _ in range(n):
        k = torch.randint(0, len(pool), (b,), device=x.device, generator=generator)
        v = torch.randint(1, m, (b,), device=x.device, generator=generator).double()
        mag = v * max_v[k] / 10
        mag = torch.where(integer[k], torch.floor(mag), mag) + bias[k]
        mag = torch.where(rel[k], torch.floor(mag * size), mag)  # Cutout, Translate: a fraction of the size
        mag = torch.where(ids[k] == OP["solarize"], 256 - mag, mag)  # DISC's Solarize(img, 256 − v)
        op = torch.where(torch.rand(b, device=x.device, generator=generator) < 0.5, ids[k], 0)
        out = apply_ops(out, op, _signed(op, mag.float(), generator), generator, cutout_fill=127.0)
    out = cutout_abs(out, torch.full((b,), float(int(size * 0.15)), device=x.device), 127.0, generator)
    return out.to(torch.uint8)


# ProMix's (FixMatch's) ``augment_list``: (op, low, high); the magnitude is uniform in [low, high) in the op's
# unit (factor, bits, degrees, shear, fraction of the size for translate, threshold)
FIXMATCH_POOL = (("autocontrast", 0, 1), ("brightness", 0.05, 0.95), ("color", 0.05, 0.95),
                 ("contrast", 0.05, 0.95), ("equalize", 0, 1), ("identity", 0, 1), ("posterize", 4, 8),
                 ("rotate", -30, 30), ("sharpness", 0.05, 0.95), ("shear_x", -0.3, 0.3), ("shear_y", -0.3, 0.3),
                 ("solarize", 0, 256), ("translate_x", -0.3, 0.3), ("translate_y", -0.3, 0.3))
FIXMATCH_CUTOUT_FILL = (125.0, 123.0, 114.0)


def randaugment_fixmatch(x: torch.Tensor, n: int = 3, generator: torch.Generator | None = None,
                         pool=FIXMATCH_POOL) -> torch.Tensor:
    """ProMix's ``RandomAugment(n, m)`` on a uint8 batch: n ops per image drawn with replacement from ``pool``,
    each applied with a uniform magnitude in its range (posterize at int(v) bits, translate v·size pixels),
    then a Cutout of ⌊U·½·width⌋ pixels in (125, 123, 114); returns uint8."""
    b, _, h, w = x.shape
    ids = torch.tensor([OP[name] for name, _, _ in pool], device=x.device)
    low = torch.tensor([lo for _, lo, _ in pool], device=x.device, dtype=torch.float64)
    high = torch.tensor([hi for _, _, hi in pool], device=x.device, dtype=torch.float64)
    out = x.float()
    for _ in range(n):
        k = torch.randint(0, len(pool), (b,), device=x.device, generator=generator)
        u = torch.rand(b, device=x.device, generator=generator, dtype=torch.float64)
        mag, op = low[k] + (high[k] - low[k]) * u, ids[k]
        mag = torch.where(op == OP["posterize"], torch.floor(mag), mag)
        mag = mag * torch.where(op == OP["translate_x"], w, torch.where(op == OP["translate_y"], h, 1))
        out = apply_ops(out, op, mag, generator)
    size = torch.floor(torch.rand(b, device=x.device, generator=generator) * 0.5 * w)
    out = cutout_abs(out, size, FIXMATCH_CUTOUT_FILL, generator)
    return out.to(torch.uint8)
