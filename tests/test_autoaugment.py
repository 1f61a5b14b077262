"""The batched strong-augmentation ops against PIL's (which the official SOP+, UNICON and DISC pipelines call per
image), each sample taking its own op; UNICON's fill, bicubic shears and fractional translates; the policy tables,
magnitudes and signs of SOP's and DeepVoltaire's readings; the draws (shapes, dtype, determinism)."""
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


def _pair(smooth: bool):
    if smooth:  # geometric ops: a smooth image
        yy, xx = np.mgrid[0:32, 0:32]
        img = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1).clip(0, 255).astype(np.uint8)
    else:
        img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        img[:8] = 40  # a flat band, so equalize and autocontrast see repeated values
    return Image.fromarray(img), torch.from_numpy(img).permute(2, 0, 1)[None].float()


def _diff(name: str, mag: float, x: torch.Tensor, ref, **kw) -> np.ndarray:
    out = aa.apply_ops(x, torch.tensor([aa.OP[name]]), torch.tensor([mag], dtype=torch.float64), **kw)
    return np.abs(out[0].permute(1, 2, 0).numpy().astype(int) - np.asarray(ref).astype(int))


@pytest.mark.parametrize("f", [0.5, 1.7])  # UNICON's factors 1 ± m
def test_enhancements_match_pil_within_one_level(f):
    pil, x = _pair(False)
    for name, enh in (("brightness", ImageEnhance.Brightness), ("color", ImageEnhance.Color),
                      ("contrast", ImageEnhance.Contrast), ("sharpness", ImageEnhance.Sharpness)):
        assert _diff(name, f, x, enh(pil).enhance(f)).max() <= 1, name


def test_value_ops_match_pil_exactly():
    pil, x = _pair(False)
    for name, mag, ref in (("posterize", 5.0, ImageOps.posterize(pil, 5)),
                           ("solarize", 200.0, ImageOps.solarize(pil, 200)),
                           ("solarize", 199.11, ImageOps.solarize(pil, 199.11)),  # UNICON's fractional thresholds
                           ("equalize", 0.0, ImageOps.equalize(pil)), ("autocontrast", 0.0, ImageOps.autocontrast(pil)),
                           ("invert", 0.0, ImageOps.invert(pil))):
        assert _diff(name, mag, x, ref).max() == 0, name


@pytest.mark.parametrize("smooth", [True, False])
def test_unicon_geometric_ops_follow_pil_with_fill_128(smooth):
    pil, x = _pair(smooth)
    fill = (128, 128, 128)
    for t in (0.25 * 32, -0.25 * 32, 150 / 331 * 32, -5.3):  # whole and fractional pixels, nearest: exact
        assert _diff("translate_x", t, x, pil.transform(pil.size, Image.AFFINE, (1, 0, t, 0, 1, 0),
                                                        fillcolor=fill), fill=128.0).max() == 0
        assert _diff("translate_y", t, x, pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, t),
                                                        fillcolor=fill), fill=128.0).max() == 0
    for m in (0.3, -0.3, -0.2):  # PIL's bicubic: one level at most, on few pixels
        for name, coeffs in (("shear_x", (1, m, 0, 0, 1, 0)), ("shear_y", (1, 0, 0, m, 1, 0))):
            d = _diff(name, m, x, pil.transform(pil.size, Image.AFFINE, coeffs, Image.BICUBIC, fillcolor=fill),
                      fill=128.0, shear="bicubic")
            assert d.max() <= 1 and (d > 0).mean() < 0.01, (name, m)
    rot = pil.convert("RGBA").rotate(20.0)  # the official rotate_with_fill
    ref = Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert("RGB")
    assert (_diff("rotate", 20.0, x, ref, fill=128.0) > 1).mean() < 0.01  # counter-clockwise, nearest
    assert _diff("rotate", 20.0, x, ref, fill=128.0).mean() < 4 < _diff("rotate", -20.0, x, ref, fill=128.0).mean()


def test_policy_tables_and_dv_magnitudes():
    assert len(aa.AUTOAUG_CIFAR10_DV) == len(aa.AUTOAUG_CIFAR10) == 25
    assert aa.AUTOAUG_CIFAR10_DV[1] == (("rotate", 0.7, 2), ("translate_x", 0.3, 9))
    diff = [i for i, (a, b) in enumerate(zip(aa.AUTOAUG_CIFAR10, aa.AUTOAUG_CIFAR10_DV)) if a != b]
    assert diff == [13] and aa.AUTOAUG_CIFAR10_DV[13][1] == ("color", 0.2, 8)
    assert aa.dv_magnitude("posterize", 7) == 5.0 and aa.dv_magnitude("solarize", 9) == 0.0  # round(linspace(8, 4))[7]
    assert aa.dv_magnitude("translate_x", 9) == pytest.approx(150 / 331)
    assert aa.dv_magnitude("rotate", 2) == pytest.approx(20 / 3) and aa.dv_magnitude("color", 9) == pytest.approx(0.9)


def _drawn(monkeypatch, policy, n: int = 512):
    """(op, magnitude, fill, shear) of every applied op of ``n`` draws of ``policy``."""
    seen, real = [], aa.apply_ops

    def spy(x, op, mag, generator=None, cutout_fill=127.0, fill=0.0, shear="nearest", **kw):
        seen.extend((int(o), float(m), fill, shear) for o, m in zip(op, mag) if int(o) != 0)
        return real(x, op, mag, generator, cutout_fill, fill, shear, **kw)

    monkeypatch.setattr(aa, "apply_ops", spy)
    aa.autoaugment_cifar10(torch.zeros(n, 3, 32, 30, dtype=torch.uint8), torch.Generator().manual_seed(0), policy)
    return seen


def _mags(seen, name: str) -> set[float]:
    return {round(m, 4) for o, m, _, _ in seen if o == aa.OP[name]}


def test_each_reading_keeps_its_signs_units_fill_and_sampling(monkeypatch):
    uni = _drawn(monkeypatch, aa.UNICON_POLICY)
    assert {(f, s) for _, _, f, s in uni} == {(128.0, "bicubic")}
    assert _mags(uni, "rotate") == {round(20 / 3, 4)}  # never mirrored
    assert _mags(uni, "translate_y") == {round(s * 150 / 331 * k / 9 * 32, 4) for s in (1, -1) for k in (3, 9)}
    assert _mags(uni, "translate_x") == {round(s * 150 / 331 * k / 9 * 30, 4) for s in (1, -1) for k in (8, 9)}
    assert _mags(uni, "sharpness") == {round(1 + s * 0.1 * k, 4) for s in (1, -1) for k in (1, 3, 5, 6, 9)}
    sop = _drawn(monkeypatch, aa.SOP_POLICY)
    assert {(f, s) for _, _, f, s in sop} == {(0.0, "nearest")}
    assert _mags(sop, "rotate") == {6.0, -6.0} and _mags(sop, "translate_x") == {9.0, -9.0, 8.0, -8.0}
    assert _mags(sop, "sharpness") == {round(0.1 + 0.18 * k, 4) for k in (1, 3, 5, 6, 9)}  # unsigned factors


def test_each_image_draws_its_own_sub_policy_and_the_generator_fixes_it():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = aa.autoaugment_cifar10(x, torch.Generator().manual_seed(1), aa.UNICON_POLICY)
    b = aa.autoaugment_cifar10(x, torch.Generator().manual_seed(1), aa.UNICON_POLICY)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    changed = (a != x).flatten(1).any(1)
    assert 0.5 < changed.float().mean() < 1  # most images change, a few draw no applied op


@pytest.mark.parametrize("shear", ["nearest", "bicubic"])
def test_dispatch_per_op_equals_the_whole_batch_where(shear):
    """Each op on its own rows (the CPU default) gives the same images and draws as every op on the whole batch."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (96, 3, 12, 10), generator=g).float()
    x[:8] = x[:8] // 3 + 40
    op = torch.randint(0, len(aa.OPS), (96,), generator=g)
    mag = torch.rand(96, generator=g, dtype=torch.float64) * 4
    mag = torch.where(aa._is(op, ("posterize",)), torch.floor(mag) + 2, mag)
    mag = torch.where(aa._is(op, ("solarize", "solarize_add")), mag * 50, mag)
    mag = torch.where(op == aa.OP["rotate"], mag * 8, mag)
    mag = torch.where(aa._is(op, ("shear_x", "shear_y")), mag / 10, mag)
    out = {}
    for dispatch in (True, False):
        gen = torch.Generator().manual_seed(9)
        out[dispatch] = aa.apply_ops(x, op, mag, gen, fill=128.0, shear=shear, dispatch=dispatch)
        out[dispatch, "next"] = torch.rand(1, generator=gen)
    assert torch.equal(out[True], out[False]) and torch.equal(out[True, "next"], out[False, "next"])
    assert not torch.equal(out[True], x)
