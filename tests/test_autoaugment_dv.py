"""AutoAugment's CIFAR-10 policy, batched: each op against PIL (the official transform is PIL-based), the
policy table, per-image draws and reproducibility."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lnlbench.components import autoaugment_dv as aa

Image = pytest.importorskip("PIL.Image")
from PIL import ImageEnhance, ImageOps  # noqa: E402


def _pair(smooth: bool):
    if smooth:  # geometric ops: a smooth image, so the interpolation kernels barely matter
        yy, xx = np.mgrid[0:32, 0:32]
        img = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1).clip(0, 255).astype(np.uint8)
    else:
        img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        img[:8] = 40  # a flat band, so equalize and autocontrast see repeated values
    return Image.fromarray(img), torch.from_numpy(img).permute(2, 0, 1)[None].float()


def _diff(op: str, mag: float, x: torch.Tensor, ref) -> np.ndarray:
    got = aa.apply_op(op, x.clone(), torch.tensor([mag])).round().clamp(0, 255)[0].permute(1, 2, 0).numpy()
    return np.abs(got.astype(int) - np.asarray(ref).astype(int))


@pytest.mark.parametrize("f", [0.5, 1.7])
def test_enhancements_match_pil_within_one_level(f):
    pil, x = _pair(False)
    for op, enh in (("brightness", ImageEnhance.Brightness), ("color", ImageEnhance.Color),
                    ("contrast", ImageEnhance.Contrast), ("sharpness", ImageEnhance.Sharpness)):
        assert _diff(op, f - 1, x, enh(pil).enhance(f)).max() <= 1, op


def test_value_ops_match_pil_exactly():
    pil, x = _pair(False)
    for op, mag, ref in (("posterize", 5.0, ImageOps.posterize(pil, 5)), ("solarize", 200.0, ImageOps.solarize(pil, 200)),
                         ("equalize", 0.0, ImageOps.equalize(pil)), ("autocontrast", 0.0, ImageOps.autocontrast(pil)),
                         ("invert", 0.0, ImageOps.invert(pil))):
        assert _diff(op, mag, x, ref).max() == 0, op


def test_geometric_ops_follow_pil_maps():
    pil, x = _pair(True)
    fill = (128, 128, 128)
    for t in (0.25, -0.25):  # whole-pixel shifts: exact
        assert _diff("translateX", t, x, pil.transform(pil.size, Image.AFFINE, (1, 0, t * 32, 0, 1, 0),
                                                       fillcolor=fill)).max() == 0
        assert _diff("translateY", t, x, pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, t * 32),
                                                       fillcolor=fill)).max() == 0
    for m in (0.3, -0.3):  # PIL's bicubic against our bilinear: about one grey level on average
        assert _diff("shearX", m, x, pil.transform(pil.size, Image.AFFINE, (1, m, 0, 0, 1, 0), Image.BICUBIC,
                                                   fillcolor=fill)).mean() < 2
        assert _diff("shearY", m, x, pil.transform(pil.size, Image.AFFINE, (1, 0, 0, m, 1, 0), Image.BICUBIC,
                                                   fillcolor=fill)).mean() < 2
    rot = pil.convert("RGBA").rotate(20.0)  # the official rotate_with_fill
    ref = Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert("RGB")
    assert _diff("rotate", 20.0, x, ref).mean() < 4 < _diff("rotate", -20.0, x, ref).mean()  # counter-clockwise


def test_policy_table_and_magnitudes():
    assert len(aa.CIFAR10_POLICY) == 25
    assert aa.CIFAR10_POLICY[1] == (0.7, "rotate", 2, 0.3, "translateX", 9)
    assert aa._RANGES["posterize"](7) == 5.0 and aa._RANGES["solarize"](9) == 0.0  # round(linspace(8, 4))[7]
    assert aa._RANGES["translateX"](9) == pytest.approx(150 / 331)


def test_each_image_draws_its_own_sub_policy_and_the_generator_fixes_it():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = aa.cifar10_autoaugment(x, torch.Generator().manual_seed(1))
    b = aa.cifar10_autoaugment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 255
    changed = (a != x.float()).flatten(1).any(1)
    assert 0.5 < changed.float().mean() < 1  # most images change, a few draw no applied op
