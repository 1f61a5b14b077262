"""The batched on-device augmentation reproduces torchvision's RandomCrop(padding) + flip + Normalize."""
from __future__ import annotations

import torch

from lnlbench.datasets.augment import Augmenter


def _aug(padding=4, flip=True):
    return Augmenter.build((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), padding, flip, torch.device("cpu"))


def test_each_output_is_a_shifted_or_flipped_window_of_the_zero_padded_input():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)  # no zeros in the image
    out = _aug(padding=2).crop_flip(x, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)


def test_all_shifts_and_both_flips_occur():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros((4000, 1, 4, 4), dtype=torch.uint8)
    x[:, :, 0, 0] = 255  # mark the top-left pixel; its position reveals the shift and flip
    out = _aug(padding=1).crop_flip(x, g)
    pos = {tuple(torch.nonzero(o[0]).flatten().tolist()) for o in out}
    # the mark lands at (dy', dx') for each of 3x3 shifts, and mirrored; some crops cut it away
    assert len(pos) >= 9


def test_no_flip_keeps_orientation_and_no_padding_is_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=g)
    assert torch.equal(_aug(padding=0, flip=False).crop_flip(x, g), x)


def test_normalize_matches_totensor_normalize():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = _aug().normalize(x)
    ref = (x.float() / 255 - 0.5) / 0.25
    assert torch.allclose(out, ref, atol=1e-6) and out.dtype == torch.float32


def test_same_generator_seed_same_views():
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    a = _aug()(x, torch.Generator().manual_seed(5))
    b = _aug()(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
