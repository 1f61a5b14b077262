"""The array-file format: bring your own dataset as one ``.npz``, and the cache format of the built-in loaders.

An array file is an uncompressed or compressed numpy ``.npz`` archive (``numpy.savez``) that loads with
``allow_pickle=False``, so strings must be fixed-width unicode arrays (``np.array(names, dtype=str)``), never
object arrays. Keys:

required
    ``x_train``  (N, H, W, C) uint8, pixel values 0–255, channels last; grey images may be (N, H, W)
    ``y_train``  (N,) any integer dtype, the clean labels, each in ``0 .. len(classes) - 1``
    ``x_test``   (M, H, W, C) uint8 (or (M, H, W)), the same H, W, C as ``x_train``
    ``y_test``   (M,) integer, clean test labels in the same range
    ``classes``  (K,) str, the class names; label k is ``classes[k]``
optional
    ``y_train_coarse``, ``y_test_coarse``  (N,) / (M,) integer superclass labels (CIFAR-100); they need
    ``coarse_classes``  (K',) str, the superclass names
    ``y_train_noisy``  (N,) integer: real noisy labels that come with the data (CIFAR-N, Clothing1M)
    ``mean``, ``std``  (C,) float: per-channel normalisation on the [0, 1] scale; computed from
    ``x_train`` when absent (the population mean and standard deviation of every pixel, divided by 255)
    ``train_index``  (N,) integer: each training sample's index in the original training set
    (default ``0 .. N-1``; a subset of a larger set keeps the original positions here)
    ``x_val``, ``y_val``  (V, H, W, C) uint8 and (V,) integer: a *clean* validation set that comes with the
    dataset (Clothing1M's), used by the harness for model selection only; they need each other

Any other key is an error (a misspelt ``y_train_noisy`` must not be dropped silently). Every problem is
reported as a one-line :class:`LnlError` that names the key and the fix.

Any dataset name can be pointed at an array file (``--data-file``, ``DataSpec.data_file``). A registered
name keeps its loader's :class:`Preset`: its normalisation constants and augmentation flags replace the
file's ``mean``/``std`` (so ``cifar10`` from a file normalises exactly as ``cifar10`` from torchvision), and
its class list is checked. :func:`load_named` is the one place where a loader picks its source: the array
file if given, else the loader's cache ``<root>/<name>.npz``, else the raw files (then written to the cache).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lnlbench.errors import LnlError, unknown_keys
from lnlbench.files import atomic_write
from lnlbench.types import DatasetInfo, DataSpec

REQUIRED = ("x_train", "y_train", "x_test", "y_test", "classes")
OPTIONAL = ("y_train_coarse", "y_test_coarse", "coarse_classes", "y_train_noisy", "mean", "std", "train_index",
            "x_val", "y_val")


@dataclass(frozen=True)
class Preset:
    """What a named loader fixes whatever the source of its arrays: normalisation, augmentation, classes."""

    mean: tuple[float, ...] | None = None  # None: the file's (or computed) mean and std
    std: tuple[float, ...] | None = None
    crop_padding: int | Callable[[int], int] = 4  # or a function of the image height
    flip: bool = True
    classes: tuple[str, ...] | None = None  # the exact class names, in order, when they are standard
    num_classes: int | None = None

    def apply(self, info: DatasetInfo, where: str) -> DatasetInfo:
        """``info`` with this preset's settings, after checking that its classes and channels fit."""
        if self.classes is not None and tuple(info.classes) != self.classes:
            raise LnlError(f"{where}: classes {list(info.classes)[:4]}... are not the standard {info.name} "
                           f"classes in standard order ({', '.join(self.classes)}); relabel the data in that order")
        if self.num_classes is not None and info.num_classes != self.num_classes:
            raise LnlError(f"{where}: {info.name} has {self.num_classes} classes but the data has "
                           f"{info.num_classes}; use another dataset name for a different class set")
        c, h, _ = info.image_shape
        if self.mean is not None and len(self.mean) != c:
            raise LnlError(f"{where}: {info.name} expects {len(self.mean)}-channel images, the data has {c}; "
                           "convert the images or use another dataset name")
        pad = self.crop_padding if isinstance(self.crop_padding, int) else self.crop_padding(h)
        return dataclasses.replace(info, mean=self.mean or info.mean, std=self.std or info.std,
                                   crop_padding=pad, flip=self.flip)


def load_named(spec: DataSpec, preset: Preset, cache: Path, build: Callable[[], DatasetInfo]) -> DatasetInfo:
    """Load a named dataset from ``spec.data_file``, else from ``cache``, else ``build()`` it and cache it."""
    if spec.data_file is not None:
        path = Path(spec.data_file).expanduser()
        return preset.apply(load_array_file(path, spec.name, preset), str(path))
    if cache.is_file():
        try:
            info = load_array_file(cache, spec.name, preset)
        except LnlError as exc:
            raise LnlError(f"{exc} (this is the loader's cache: delete {cache} to rebuild it)") from None
        return preset.apply(info, str(cache))
    info = preset.apply(build(), _where(spec))
    try:
        save_array_file(cache, info)
    except OSError as exc:  # a read-only data root must not stop a run that has its data
        warnings.warn(f"could not write the cache {cache}: {exc}", stacklevel=2)
    return info


def _where(spec: DataSpec) -> str:
    return f"{spec.name} under {spec.root}"


def load_array_file(path: Path | str, name: str, preset: Preset | None = None) -> DatasetInfo:
    """Read and validate an array file (format in the module docstring) as the dataset ``name``.

    With a ``preset`` that fixes ``mean``/``std``, the statistics are not computed from the images.
    """
    path = Path(path).expanduser()
    arrays = _read_npz(path)
    where = f"array file {path}"
    x_train, x_test = _images(arrays, "x_train", where), _images(arrays, "x_test", where)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise LnlError(f"{where}: x_test images are {x_test.shape[1:]} (H, W, C) but x_train images are "
                       f"{x_train.shape[1:]}; store both splits at the same size")
    classes = _names(arrays, "classes", where)
    y_train = _labels(arrays, "y_train", len(x_train), len(classes), where)
    y_test = _labels(arrays, "y_test", len(x_test), len(classes), where)
    coarse = _coarse(arrays, len(x_train), len(x_test), where)
    noisy = _labels(arrays, "y_train_noisy", len(x_train), len(classes), where, required=False)
    index = _labels(arrays, "train_index", len(x_train), None, where, required=False)
    x_val = y_val = None
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise LnlError(f"{where}: has only one of x_val and y_val; store both (a clean validation set) or neither")
    if "x_val" in arrays:
        x_val = _images(arrays, "x_val", where)
        if x_val.shape[1:] != x_train.shape[1:]:
            raise LnlError(f"{where}: x_val images are {x_val.shape[1:]} but x_train images are "
                           f"{x_train.shape[1:]}; store every split at the same size")
        y_val = _labels(arrays, "y_val", len(x_val), len(classes), where)
    if preset is not None and preset.mean is not None and "mean" not in arrays:
        mean, std = preset.mean, preset.std
    else:
        mean, std = _stats(arrays, x_train, where)
    return DatasetInfo(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                       classes=classes, mean=mean, std=std, y_train_coarse=coarse[0], y_test_coarse=coarse[1],
                       coarse_classes=coarse[2], y_train_given_noisy=noisy, train_index=index, source=str(path),
                       x_val=x_val, y_val=y_val)


def save_array_file(path: Path | str, info: DatasetInfo) -> Path:
    """Write ``info`` as an array file, atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path).expanduser()
    arrays = {"x_train": info.x_train, "y_train": info.y_train, "x_test": info.x_test, "y_test": info.y_test,
              "classes": np.array(info.classes, dtype=str), "mean": np.array(info.mean, dtype=np.float64),
              "std": np.array(info.std, dtype=np.float64), "train_index": info.train_index}
    optional = {"y_train_coarse": info.y_train_coarse, "y_test_coarse": info.y_test_coarse,
                "y_train_noisy": info.y_train_given_noisy, "x_val": info.x_val, "y_val": info.y_val,
                "coarse_classes": None if info.coarse_classes is None else np.array(info.coarse_classes, dtype=str)}
    arrays.update({k: v for k, v in optional.items() if v is not None})
    return atomic_write(path, lambda f: np.savez(f, **arrays))  # a file object: no ".npz" appended


def decode_images(paths: Sequence[Path], size: tuple[int, int],
                  prepare: Callable[..., object] | None = None) -> np.ndarray:
    """Decode image files as RGB into one (N, H, W, 3) uint8 array; ``prepare`` maps each PIL image first.

    PIL releases the GIL while decoding, so a few threads help; the output is filled in place.
    """
    from PIL import Image, UnidentifiedImageError

    h, w = size
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)

    def one(i: int) -> None:
        try:
            with Image.open(paths[i]) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise LnlError(f"cannot decode image {paths[i]}: {exc}; replace or remove the file") from None
        a = np.asarray(prepare(img) if prepare else img)
        if a.shape != (h, w, 3):
            raise LnlError(f"image {paths[i]} is {a.shape[1]}x{a.shape[0]} pixels, expected {w}x{h}")
        out[i] = a

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(paths))))
    return out


def check_npz(path: Path, what: str = "array file") -> None:
    """A one-line error unless ``path`` starts like an .npz (zip) archive: a text or pickle file given as
    ``.npz`` is "not an npz archive", before numpy reads it (and would call it pickled data)."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        return  # a single .npy array: the caller says what it expected
    if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        kind = "a text file" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "another format"
        raise LnlError(f"cannot read {what} {path}: it is not an npz archive ({kind}); write it with numpy.savez")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise LnlError(f"array file not found: {path}; check the --data-file path")
    check_npz(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise LnlError(f"cannot read array file {path} ({exc}); write it with numpy.savez") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise LnlError(f"{path} holds a single array, not an .npz archive of named arrays; write it with "
                       "numpy.savez(path, x_train=..., y_train=..., ...)")
    with z:
        unknown = sorted(set(z.files) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            raise LnlError(f"array file {path}: {unknown_keys('key', unknown, REQUIRED + OPTIONAL)} "
                           "(see lnlbench.datasets.arrayfile)")
        return {k: _read_key(z, k, path) for k in z.files}


def _read_key(z: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError:  # numpy refuses object arrays without allow_pickle
        raise LnlError(f"array file {path}: key '{key}' is an object (pickled) array; store it as a plain "
                       "array, strings as np.array(names, dtype=str)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise LnlError(f"array file {path}: key '{key}' cannot be read ({exc}); write the file again") from None


def _images(arrays: dict[str, np.ndarray], key: str, where: str) -> np.ndarray:
    x = _get(arrays, key, where)
    if x.dtype != np.uint8:
        raise LnlError(f"{where}: '{key}' has dtype {x.dtype}, expected uint8 pixel values 0-255; "
                       "convert with np.clip(np.rint(x * 255), 0, 255).astype(np.uint8) for [0, 1] floats")
    if x.ndim == 3:
        x = x[..., None]  # grey images (N, H, W): add the channel axis
    if x.ndim != 4 or len(x) == 0 or min(x.shape[1:]) == 0:
        raise LnlError(f"{where}: '{key}' has shape {x.shape}, expected (N, H, W, C) or (N, H, W) with N > 0")
    return x


def _names(arrays: dict[str, np.ndarray], key: str, where: str) -> list[str]:
    a = _get(arrays, key, where)
    if a.ndim != 1 or len(a) == 0 or a.dtype.kind not in "US":
        raise LnlError(f"{where}: '{key}' must be a non-empty 1-D string array, got dtype {a.dtype} shape "
                       f"{a.shape}; store it as np.array(names, dtype=str)")
    return [s.decode() if isinstance(s, bytes) else str(s) for s in a.tolist()]


def _labels(arrays: dict[str, np.ndarray], key: str, n: int, k: int | None, where: str,
            required: bool = True) -> np.ndarray | None:
    if key not in arrays and not required:
        return None
    y = _get(arrays, key, where)
    if y.ndim != 1 or len(y) != n:
        raise LnlError(f"{where}: '{key}' has shape {y.shape}, expected ({n},), one label per image")
    if y.dtype.kind not in "iu":
        raise LnlError(f"{where}: '{key}' has dtype {y.dtype}, expected an integer type; "
                       "store class indices, not names or one-hot rows")
    lo, hi = (int(y.min()), int(y.max())) if n else (0, 0)
    if lo < 0 or (k is not None and hi >= k):
        bound = f"0..{k - 1} (one per name in the class list)" if k is not None else ">= 0"
        raise LnlError(f"{where}: '{key}' has labels in {lo}..{hi}, expected {bound}; fix the labels "
                       "or the class list")
    return y.astype(np.int64, copy=False)


def _coarse(arrays: dict[str, np.ndarray], n_train: int, n_test: int, where: str) -> tuple:
    keys = ("y_train_coarse", "y_test_coarse", "coarse_classes")
    if not any(k in arrays for k in keys):
        return None, None, None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise LnlError(f"{where}: superclass keys come together; '{missing[0]}' is missing "
                       f"(add it or drop {', '.join(k for k in keys if k in arrays)})")
    names = _names(arrays, "coarse_classes", where)
    return (_labels(arrays, "y_train_coarse", n_train, len(names), where),
            _labels(arrays, "y_test_coarse", n_test, len(names), where), names)


def _stats(arrays: dict[str, np.ndarray], x: np.ndarray, where: str) -> tuple[tuple, tuple]:
    c = x.shape[-1]
    if "mean" in arrays or "std" in arrays:
        mean, std = _get(arrays, "mean", where), _get(arrays, "std", where)
        if mean.shape != (c,) or std.shape != (c,) or mean.dtype.kind != "f" or std.dtype.kind != "f":
            raise LnlError(f"{where}: 'mean' and 'std' must be float arrays of shape ({c},), one per channel; "
                           f"got {mean.shape} and {std.shape}")
        if not (np.all((mean >= 0) & (mean <= 1)) and np.all((std > 0) & (std <= 1))):
            raise LnlError(f"{where}: 'mean'/'std' must be on the [0, 1] scale with std > 0 (divide by 255)")
        return tuple(map(float, mean)), tuple(map(float, std))
    return channel_stats(x)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and standard deviation of uint8 images on the [0, 1] scale.

    From a 256-bin histogram per channel: no float copy of the images, and faster than summing floats.
    """
    flat = x.reshape(-1, x.shape[-1])
    counts = np.zeros((flat.shape[1], 256))
    for i in range(0, len(flat), 1 << 18):
        block = flat[i:i + (1 << 18)]
        for c in range(flat.shape[1]):
            counts[c] += np.bincount(block[:, c], minlength=256)
    values = np.arange(256.0) / 255.0
    mean = counts @ values / len(flat)
    std = np.sqrt(np.maximum(counts @ values**2 / len(flat) - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)  # constant images: keep the normalisation finite
    return tuple(map(float, mean)), tuple(map(float, std))


def _get(arrays: dict[str, np.ndarray], key: str, where: str) -> np.ndarray:
    if key not in arrays:
        raise LnlError(f"{where}: missing key '{key}'; an array file needs {', '.join(REQUIRED)} "
                       "(see lnlbench.datasets.arrayfile)")
    return arrays[key]
