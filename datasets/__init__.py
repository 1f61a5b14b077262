"""Datasets, noise generators and batched augmentation (imported as ``lnlbench.datasets``).

Importing this package registers the built-in datasets; ``lnlbench.datasets.noise`` and
``lnlbench.datasets.real_noise`` and ``lnlbench.datasets.noise_file`` (frozen noise files) register the
noise generators.
"""
from lnlbench.types import DatasetInfo, DataSpec, NoiseInfo, NoisyLabels, default_data_root

from . import arrayfile, cifar, clothing1m, digits, tinyimagenet, webvision  # noqa: F401  (registration)

__all__ = ["DataSpec", "DatasetInfo", "NoiseInfo", "NoisyLabels", "default_data_root"]
