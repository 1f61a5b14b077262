"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009), read through torchvision, cached as array files.

Where the arrays come from, first match wins (:func:`lnlbench.datasets.arrayfile.load_named`):

1. ``--data-file`` (``DataSpec.data_file``): any array file, e.g. the one ``shared/data/export.py`` writes;
2. the cache ``<root>/cifar10.npz`` (``cifar100.npz``), written atomically after the first load
   (delete it to rebuild);
3. torchvision's python-version files under ``<root>/cifar10/cifar-10-batches-py`` (resp.
   ``<root>/cifar100/cifar-100-python``), fetched by ``torchvision.datasets.CIFAR10(..., download=True)``
   when ``--download`` is given. Offline and absent: a one-line error naming that folder.

Normalisation follows DivideMix's ``dataloader_cifar.py`` (LiJunnan1992/DivideMix), the protocol most LNL
papers reuse: CIFAR-10 mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010); CIFAR-100 mean
(0.507, 0.487, 0.441), std (0.267, 0.256, 0.276). (The CIFAR-10 std is the widely copied value, not the
true pixel std of about (0.247, 0.243, 0.262); normalisation only rescales the inputs, and we keep the
reference code's numbers.) Augmentation as there: random crop with padding 4 and horizontal flip.
These settings hold whatever the source, array files included.

CIFAR-100 also yields its 20 superclasses: torchvision's ``CIFAR100`` does not expose them, so they are read
from the official pickles (``train``/``test``: ``coarse_labels``; ``meta``: ``coarse_label_names``), the way
torchvision reads the fine labels. An array file without superclass keys gives ``None`` (noise that needs
superclasses then says so).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from lnlbench.errors import LnlError
from lnlbench.registry import register_dataset
from lnlbench.types import DatasetInfo, DataSpec

from .arrayfile import Preset, load_named

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10 = Preset(mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010), crop_padding=4, flip=True,
                 classes=CIFAR10_CLASSES, num_classes=10)
CIFAR100 = Preset(mean=(0.507, 0.487, 0.441), std=(0.267, 0.256, 0.276), crop_padding=4, flip=True,
                  num_classes=100)


@register_dataset("cifar10")
def load_cifar10(spec: DataSpec) -> DatasetInfo:
    """CIFAR-10, 32×32×3, 10 classes, 50,000 train / 10,000 test (torchvision files or an array file)."""
    return load_named(spec, CIFAR10, spec.root / "cifar10.npz", lambda: _build(spec, coarse=False))


@register_dataset("cifar100")
def load_cifar100(spec: DataSpec) -> DatasetInfo:
    """CIFAR-100, 32×32×3, 100 classes in 20 superclasses, 50,000 train / 10,000 test."""
    return load_named(spec, CIFAR100, spec.root / "cifar100.npz", lambda: _build(spec, coarse=True))


def _build(spec: DataSpec, coarse: bool) -> DatasetInfo:
    """Read the torchvision folder (downloading it if allowed) into a :class:`DatasetInfo`."""
    from torchvision.datasets import CIFAR10 as TvCIFAR10
    from torchvision.datasets import CIFAR100 as TvCIFAR100

    cls = TvCIFAR100 if coarse else TvCIFAR10
    name = "cifar100" if coarse else "cifar10"
    root = spec.root / name
    raw = root / cls.base_folder
    if not spec.download and not raw.is_dir():
        raise LnlError(f"{name} not found: expected torchvision's folder {raw}; pass --download to fetch it, "
                       "or --data-file to use an array file")
    train, test = _open(cls, root, raw, spec.download)
    classes = [str(c) for c in train.classes]  # the preset checks CIFAR-10's against the standard list
    extra: dict[str, Any] = {}
    if coarse:
        extra = dict(zip(("y_train_coarse", "y_test_coarse", "coarse_classes"), _read_coarse(raw)))
    preset = CIFAR100 if coarse else CIFAR10
    return DatasetInfo(name=spec.name, x_train=np.ascontiguousarray(train.data), y_train=np.asarray(train.targets),
                       x_test=np.ascontiguousarray(test.data), y_test=np.asarray(test.targets), classes=classes,
                       mean=preset.mean, std=preset.std, source=str(raw), **extra)


def _open(cls: type, root: Path, raw: Path, download: bool) -> tuple[Any, Any]:
    """Both splits through torchvision, its errors turned into one-line errors that name the fix."""
    try:
        return cls(str(root), train=True, download=download), cls(str(root), train=False, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted" (a checksum mismatch)
        raise LnlError(f"the files in {raw} are incomplete or corrupted ({exc}); delete {raw} and pass "
                       "--download, or use --data-file") from None
    except OSError as exc:  # includes a failed download (urllib.error.URLError)
        fix = "check the network, or use --data-file" if download else "check the files"
        raise LnlError(f"cannot read or download {raw}: {exc}; {fix}") from None


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: any other global (a callable) is refused, so a tampered
    CIFAR pickle cannot run code (``pickle.load`` would import and call whatever the file names)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # protocol-2 bytes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: only arrays and plain data")
        return super().find_class(module, name)


def _read_coarse(raw: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR-100 superclass labels and names from the official python pickles."""
    def unpickle(name: str) -> dict[str, Any]:
        try:
            with open(raw / name, "rb") as f:
                return _ArraysOnly(f, encoding="latin1").load()  # the official format, without code
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            raise LnlError(f"cannot read {raw / name} ({exc}); delete {raw} and pass --download") from None

    try:
        y_train = np.asarray(unpickle("train")["coarse_labels"])
        y_test = np.asarray(unpickle("test")["coarse_labels"])
        names = [str(c) for c in unpickle("meta")["coarse_label_names"]]
    except KeyError as exc:
        raise LnlError(f"{raw} lacks the CIFAR-100 key {exc}; it is not the python version of CIFAR-100: "
                       "delete it and pass --download") from None
    return y_train, y_test, names
