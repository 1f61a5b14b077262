"""Datasets, noise generators and batched augmentation (imported as ``lnlbench.datasets``).

Importing this package registers the built-in datasets; ``lnlbench.datasets.noise`` and
``lnlbench.datasets.real_noise`` register the noise generators.
"""
from .base import DataSpec, DatasetInfo, NoiseInfo, NoisyLabels, default_data_root
from . import digits, cifar, arrayfile, tinyimagenet, clothing1m  # noqa: F401  (registration)

__all__ = ["DataSpec", "DatasetInfo", "NoiseInfo", "NoisyLabels", "default_data_root"]
