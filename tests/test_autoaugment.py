"""The batched strong-augmentation ops against PIL's (which the official SOP+ and DISC pipelines call per image),
each sample taking its own op, and the two policies' draws (shapes, dtype, determinism, probability 0 = identity)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from lnlbench.components import autoaugment as aa


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 12, 10), dtype=torch.uint8, generator=g)
    x[0] = x[0] // 3 + 40  # a low-contrast image: autocontrast and equalize have work to do
    return x


def _pil(x: torch.Tensor, i: int) -> Image.Image:
    return Image.fromarray(x[i].permute(1, 2, 0).numpy())


def _back(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float()


PIL_OPS = {
    "autocontrast": (0.0, lambda im, m: ImageOps.autocontrast(im)),
    "equalize": (0.0, lambda im, m: ImageOps.equalize(im)),
    "invert": (0.0, lambda im, m: ImageOps.invert(im)),
    "posterize": (3.0, lambda im, m: ImageOps.posterize(im, int(m))),
    "solarize": (100.0, lambda im, m: ImageOps.solarize(im, m)),
    "brightness": (1.54, lambda im, m: ImageEnhance.Brightness(im).enhance(m)),
    "color": (0.46, lambda im, m: ImageEnhance.Color(im).enhance(m)),
    "contrast": (1.72, lambda im, m: ImageEnhance.Contrast(im).enhance(m)),
    "sharpness": (1.9, lambda im, m: ImageEnhance.Sharpness(im).enhance(m)),
    "shear_x": (-0.27, lambda im, m: im.transform(im.size, Image.AFFINE, (1, m, 0, 0, 1, 0))),
    "shear_y": (0.21, lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, 0, m, 1, 0))),
    "translate_x": (-3.0, lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, m, 0, 1, 0))),
    "translate_y": (4.0, lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, m))),
    "rotate": (27.0, lambda im, m: im.rotate(m)),
}


@pytest.mark.parametrize("name", sorted(PIL_OPS))
def test_each_op_matches_pil(name):
    mag, pil = PIL_OPS[name]
    x = _images()
    op = torch.full((4,), aa.OP[name])
    op[3] = 0  # the last sample takes the identity: ops are per sample
    out = aa.apply_ops(x.float(), op, torch.full((4,), mag))
    for i in range(3):
        want = _back(pil(_pil(x, i), mag))
        diff = (out[i] - want).abs()
        # at most one level off (greyscale rounding ties, autocontrast's float scale), on few pixels
        assert float(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01, f"{name}: sample {i}"
    torch.testing.assert_close(out[3], x[3].float())


def test_cutouts_cover_the_documented_boxes():
    x = torch.full((2, 1, 8, 8), 200.0)
    out = aa.cutout_abs(x, torch.tensor([3.0, 0.0]), 127.0, torch.Generator().manual_seed(1))
    assert int((out[0] == 127).sum()) in (4, 6, 9) and bool((out[1] == 200).all())  # 3×3, clipped at a border
    out = aa.cutout_centered(torch.ones(64, 1, 16, 16), 16, 0.0, torch.Generator().manual_seed(0))
    holes = (out == 0).sum((1, 2, 3))
    assert int(holes.max()) <= 256  # at most 16×16
    assert bool((holes >= 64).all())  # a centre inside the image leaves at least an 8×8 corner


def test_policies_are_per_sample_deterministic_and_keep_shape():
    x = _images(16)
    a = aa.autoaugment_cifar10(x, torch.Generator().manual_seed(5))
    b = aa.autoaugment_cifar10(x, torch.Generator().manual_seed(5))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    r = aa.randaugment_ops(x, n=2, m=5, generator=torch.Generator().manual_seed(5))
    assert r.dtype == torch.uint8 and r.shape == x.shape and not torch.equal(r, x)
    gray = aa.randaugment_ops(x[:, :1], generator=torch.Generator().manual_seed(5))  # one channel works
    assert gray.shape == (16, 1, 12, 10)


def test_autoaugment_magnitudes_follow_sops_level_mapping():
    assert aa.autoaug_magnitude("rotate", 2) == 6 and aa.autoaug_magnitude("translate_y", 9) == 9
    assert aa.autoaug_magnitude("solarize", 2) == 256 - 51 and aa.autoaug_magnitude("posterize", 7) == 2
    assert aa.autoaug_magnitude("shear_y", 8) == pytest.approx(0.24)
    assert aa.autoaug_magnitude("brightness", 9) == pytest.approx(1.72)
