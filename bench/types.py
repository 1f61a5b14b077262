"""The data types shared by the engine and the datasets: what a loader returns, what a noise generator takes
and returns.

They live here, in a module that imports nothing of lnlbench, so the engine (``lnlbench.data``,
``lnlbench.noisefile``) and the datasets (``lnlbench.datasets``) both import them and neither imports
the other for them. A loader turns a :class:`DataSpec` into one :class:`DatasetInfo`. Images are kept as uint8 arrays in
(N, H, W, C) layout on the host; the engine moves them to the trial's device once, as (N, C, H, W). A dataset
too large for that (full Clothing1M, mini-WebVision) gives :class:`ImageFiles` instead of arrays: the paths
of its images, which the streaming path (``lnlbench.stream``) decodes batch by batch in DataLoader workers.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


def default_data_root() -> Path:
    """``LNLBENCH_DATA`` if set, else ``~/.cache/lnlbench`` (``--data-root`` overrides both)."""
    env = os.environ.get("LNLBENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lnlbench"


@dataclass(frozen=True)
class DataSpec:
    """How to load one dataset: the name, where the files are, and whether downloading is allowed."""

    name: str
    root: Path = field(default_factory=default_data_root)
    data_file: Path | None = None  # an array file in the documented .npz format (any dataset name)
    download: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # the loader's options (see DatasetOptions)
    # The trial's ``stream`` option: True asks a loader that can for its file-backed form (ImageFiles),
    # False for arrays, None for the loader's own choice (Clothing1M in full streams).
    stream: bool | None = None


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """A file-backed image set: one path per image, decoded when a batch needs it (never held whole).

    A sample decodes to an ``size`` × ``size`` uint8 canvas: the short side resized to ``size`` (bilinear,
    antialiased, torchvision's ``Resize(size)`` on the PIL image), then the central square (``CenterCrop``).
    The trial's transform then crops ``DatasetInfo.crop_size`` from it on the device (random for training,
    central for testing), so Resize 256 → RandomCrop 224 → flip is two steps: 256 in the workers, 224 on the
    device. It stands where ``x_train`` / ``x_test`` / ``x_val`` hold arrays and answers the same ``shape``,
    ``len`` and fancy indexing (a subset is a shorter path list), so DatasetInfo users keep working.
    """

    paths: np.ndarray  # (N,) paths as bytes (os.fsencode): 1 byte a character, and forked workers share it
    size: int  # the decoded canvas side (256 for a 224 crop)

    def __post_init__(self) -> None:
        paths = self.paths
        if not (isinstance(paths, np.ndarray) and paths.dtype.kind == "S"):
            paths = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_) if len(paths) else \
                np.array([], dtype="S1")
        object.__setattr__(self, "paths", paths)

    def path(self, i: int) -> str:
        """Image ``i``'s path."""
        return os.fsdecode(self.paths[i])

    def __len__(self) -> int:
        return len(self.paths)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ImageFiles) and self.size == other.size
                and np.array_equal(self.paths, other.paths))

    __hash__ = None  # mutable-looking contents: not a dict key

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, H, W, C) of the decoded canvases, as an image array's shape."""
        return (len(self.paths), self.size, self.size, 3)

    def __getitem__(self, idx: Any) -> ImageFiles:
        return ImageFiles(self.paths[idx], self.size)


@dataclass(frozen=True)
class DatasetOptions:
    """Options of a loader that change what it loads, and so the result: trial options in the trial id.

    A loader declares its subclass with ``register_dataset(name, options=...)``; the trial's
    ``data_options`` are parsed by :meth:`parse` at resolve time (one-line errors) and reach the loader as
    ``DataSpec.options``. ``cap_option`` names the option that caps the training pool, and
    :meth:`train_cap` its value (None: the whole training set), so a recipe that needs more images than
    the pool holds stops before any loading.
    """

    cap_option: ClassVar[str | None] = None

    @classmethod
    def parse(cls, dataset: str, given: dict[str, Any]) -> DatasetOptions:
        """Validate ``given`` against the fields (subclasses convert and check values in ``__post_init__``)."""
        from lnlbench.errors import unknown_keys

        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(given) - set(names)
        if unknown:
            raise unknown_keys(f"{dataset} data option", unknown, names)
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def train_cap(self) -> int | None:
        return None


@dataclass
class DatasetInfo:
    """One dataset: images, clean labels (for the harness only), and what methods may know about it."""

    name: str
    x_train: np.ndarray | ImageFiles  # (N, H, W, C) uint8, or the image files (the same for x_test, x_val)
    y_train: np.ndarray  # (N,) int64 clean labels: the harness's, never a method's
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]  # per-channel normalisation on the [0, 1] scale
    std: tuple[float, ...]
    crop_padding: int = 4  # training augmentation: random crop with this padding (0: none)
    flip: bool = True  # training augmentation: horizontal flip
    y_train_coarse: np.ndarray | None = None  # CIFAR-100 superclasses
    y_test_coarse: np.ndarray | None = None
    coarse_classes: list[str] | None = None
    y_train_given_noisy: np.ndarray | None = None  # real noise that comes with the data (Clothing1M)
    train_index: np.ndarray | None = None  # index of each train sample in the original training set
    source: str = ""  # where the arrays came from (a path or "sklearn")
    # A clean validation set that comes with the dataset (Clothing1M's 14,313 images), for model selection
    # by the harness (``clean_val_acc`` per epoch, ``selected_acc``); methods never see it.
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    # Decoded images are larger than what models see (Clothing1M: 256 canvases, 224 crops): the training
    # transform takes a random crop of this side (no padding), the test transform the central one. None:
    # models see the stored size (crop_padding applies).
    crop_size: int | None = None
    # Further clean test sets, name → (images, labels) (mini-WebVision's ImageNet validation images of its
    # classes): the harness reports ``<name>_acc`` per epoch beside ``test_acc``; methods never see them.
    extra_tests: dict[str, tuple[Any, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y_train = np.asarray(self.y_train, dtype=np.int64)
        self.y_test = np.asarray(self.y_test, dtype=np.int64)
        if self.train_index is None:
            self.train_index = np.arange(len(self.y_train), dtype=np.int64)
        if (self.x_val is None) != (self.y_val is None):
            raise ValueError("x_val and y_val come together")
        if self.y_val is not None:
            self.y_val = np.asarray(self.y_val, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W), the layout models see (after the crop where ``crop_size`` is set)."""
        _, h, w, c = self.x_train.shape
        return (c, self.crop_size, self.crop_size) if self.crop_size else (c, h, w)

    @property
    def file_backed(self) -> bool:
        """Whether the images are files decoded on demand (the trial streams) rather than arrays."""
        return isinstance(self.x_train, ImageFiles)

    def select_train(self, idx: np.ndarray) -> DatasetInfo:
        """A copy restricted to the given training indices (a subset); the test set is kept whole."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda a: None if a is None else a[idx]
        return dataclasses.replace(
            self, x_train=self.x_train[idx], y_train=self.y_train[idx], y_train_coarse=pick(self.y_train_coarse),
            y_train_given_noisy=pick(self.y_train_given_noisy), train_index=self.train_index[idx])

    def select_test(self, idx: np.ndarray) -> DatasetInfo:
        """A copy restricted to the given test indices (a fixed test subset for CPU-scale runs)."""
        idx = np.asarray(idx, dtype=np.int64)
        return dataclasses.replace(self, x_test=self.x_test[idx], y_test=self.y_test[idx],
                                   y_test_coarse=None if self.y_test_coarse is None else self.y_test_coarse[idx])


@dataclass(frozen=True)
class NoisyLabels:
    """What a noise generator returns.

    ``transition[i, j]`` is the probability it *meant* a clean label i to become j (for real or
    instance-dependent noise: the empirical or averaged matrix), so tests can compare it with what was drawn.
    """

    labels: np.ndarray  # (N,) int64
    is_noisy: np.ndarray  # (N,) bool, labels != clean
    transition: np.ndarray  # (C, C) float64, rows sum to 1

    @property
    def realized_rate(self) -> float:
        return float(self.is_noisy.mean()) if len(self.is_noisy) else 0.0


@dataclass(frozen=True)
class NoiseInfo:
    """What a noise generator may know about the data beyond the labels."""

    dataset: str = ""
    classes: tuple[str, ...] = ()
    coarse_labels: np.ndarray | None = None  # (N,) superclass of each sample
    images: np.ndarray | None = None  # (N, H, W, C) uint8, for instance-dependent noise
    train_index: np.ndarray | None = None  # original-order index of each sample (real-noise files)
    given_noisy: np.ndarray | None = None  # noisy labels shipped with the dataset
    data_root: Path | None = None  # where real-noise label files live (``<root>/cifar-n``)
    options: dict[str, Any] = field(default_factory=dict)


# How the engine loads a dataset: ``(name, data_root, data_file, download) -> DatasetInfo``; by default
# :func:`lnlbench.data.load_dataset`, the Ray worker passes one that reads the object store.
DatasetLoader = Callable[[str, "str | None", "str | None", bool], DatasetInfo]
