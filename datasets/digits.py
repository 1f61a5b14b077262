"""scikit-learn's digits: 8×8 grey images of 10 digits, shipped with scikit-learn, so it runs offline.

The embedded default dataset. A fixed stratified split (80 % train / 20 % test, seed 0) gives
1,437 training and 360 test images. Pixel values 0–16 are rescaled to uint8 0–255. Augmentation is a
random crop with 1 pixel of padding and no flip (a flipped digit is another digit).
"""
from __future__ import annotations

import numpy as np

from lnlbench.registry import register_dataset
from lnlbench.types import DatasetInfo, DataSpec

from .arrayfile import Preset, load_array_file

DIGITS = Preset(crop_padding=1, flip=False, num_classes=10)


@register_dataset("digits")
def load_digits(spec: DataSpec) -> DatasetInfo:
    """scikit-learn digits, 8×8×1, 10 classes, 1,437 train / 360 test (embedded, offline)."""
    if spec.data_file is not None:  # the array-file format, with digits' augmentation
        return DIGITS.apply(load_array_file(spec.data_file, spec.name, DIGITS), str(spec.data_file))
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    mean = float(x_tr.mean() / 255.0)
    std = float(x_tr.std() / 255.0)
    return DatasetInfo(name=spec.name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                       classes=[str(i) for i in range(10)], mean=(mean,), std=(std,),
                       crop_padding=1, flip=False, source="sklearn.datasets.load_digits")
