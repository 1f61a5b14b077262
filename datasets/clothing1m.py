"""Clothing1M (Xiao et al., CVPR 2015): 14 clothing classes, about 1M web images with real noisy labels.

**Real noise, unknown clean train labels.** The training labels come from the text around each image
(about 38.5 % wrong) and the clean label of almost every training image is unknown. So ``y_train`` holds the
*noisy* labels, the same array as ``y_train_given_noisy``. The engine must train on them as given (the real
noise of the data, never a synthetic generator on top) and must not score anything against ``y_train``:
realised noise rate, sample-selection precision/recall or label-correction accuracy would all be
meaningless. Only test accuracy (clean labels) is scored.

Files, under ``<root>/clothing1m``, as the official release and DivideMix's ``dataloader_clothing1M.py``
(LiJunnan1992/DivideMix) read them: ``noisy_label_kv.txt`` and ``clean_label_kv.txt`` ("<key> <label>"
lines), ``noisy_train_key_list.txt`` and ``clean_test_key_list.txt`` (one key per line). An image's file is
``<root>/clothing1m/`` + ``key[7:]`` (the key without its leading ``images/``), as in DivideMix; a tree that
kept the ``images/`` folder (``<root>/clothing1m/images/...``) is found too. ``clean_val_key_list.txt``
(14,313 images) is read when present, as the dataset's clean validation set: the harness reports
``clean_val_acc`` per epoch and ``selected_acc`` = test accuracy at the best validation epoch, the official
protocol (DivideMix tests the networks saved at their best validation accuracy). ``category_names_eng.txt``
(the release's class names, line i = label i) is checked against the 14 known names when present.

**In full, streamed (the default).** With ``max_train=all`` (the default) the training set is every key
of ``noisy_train_key_list.txt`` (about 1M images), given as image files (:class:`lnlbench.types.ImageFiles`)
that the trial streams (``lnlbench.stream``): DataLoader workers decode each batch, the short side resized
to 8/7·S (256 for S = 224) and the central 256×256 square kept; the device then takes DivideMix's
``RandomCrop(224)`` + flip for training and ``CenterCrop(224)`` for testing (``DatasetInfo.crop_size``).
Deviation: the random crop moves within the central square of a non-square image, not along its whole
long side. The per-epoch class-balanced draws of the recipes (DivideMix's num_batches × batch_size per
epoch, fresh every epoch: ``lnlbench.methods.dividemix.balanced_epoch_sample``) then draw from the full
1M, as the official loaders do; the clean 14,313-image validation set and the 10,526-image test set stream
the same way.

**The fixed-subset mode** (small machines): a number ``max_train`` N decodes a pool once, into memory, at
S×S, written to ``<root>/clothing1m_<S>px_<N>.npz`` (``--stream`` streams the same pool from the files):

- ``image_size`` (default 224): every image becomes S×S, DivideMix's test view: resize the short side to
  8/7·S (256 for 224), centre crop S (torchvision ``Resize`` + ``CenterCrop``, bilinear).
- ``max_train`` N: the training pool, drawn once (seed 0) class-balanced by noisy label, at most ⌊N/14⌋ per
  class (:func:`capped_balanced_pool`), e.g. 64,000, DivideMix's per-epoch warm-up set of 1000×32×2; the
  per-epoch draws then come from this pool. ``train_index`` is each image's line in
  ``noisy_train_key_list.txt``. If the arrays would not fit in this machine's memory the loader stops
  before decoding. A recipe that needs more (ELR+'s 192,000, MLNT's baseline on the full set) stops at
  resolve time with an error naming ``max_train`` (``lnlbench.config``), rather than silently training on
  the pool. Both options are data options (``--data-opt KEY=VALUE``): they enter the trial id.

The former environment variables ``LNLBENCH_CLOTHING1M_SIZE`` / ``LNLBENCH_CLOTHING1M_TRAIN`` are no longer
read; a trial stops with a one-line error while one is set, so an old setting cannot be silently ignored.

Augmentation in the fixed-subset mode: DivideMix trains on ``Resize(256)`` + ``RandomCrop(224)`` + flip,
i.e. shifts of up to ±16 pixels with real image borders. Stored at S, the engine's random crop uses padding
S/14 (16 at 224) and flip: the same shifts, but filling the border with zeros (the streamed mode crops
real borders). Normalisation is DivideMix's Clothing1M mean
(0.6959, 0.6537, 0.6371) and std (0.3113, 0.3192, 0.3214). The backbone protocol (ImageNet-pretrained
ResNet-50, methods.md §7) is the model's business, not the loader's.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from lnlbench.errors import LnlError
from lnlbench.registry import register_dataset
from lnlbench.types import DatasetInfo, DatasetOptions, DataSpec, ImageFiles

from .arrayfile import Preset, decode_images, load_named

CLOTHING1M_CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
                      "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear")
CLOTHING1M = Preset(mean=(0.6959, 0.6537, 0.6371), std=(0.3113, 0.3192, 0.3214), crop_padding=lambda h: h // 14,
                    flip=True, classes=CLOTHING1M_CLASSES)
VAL_FILE = "clean_val_key_list.txt"  # optional: the clean validation set
CLASS_FILE = "category_names_eng.txt"  # optional: the class names, line i = label i
FILES = ("noisy_label_kv.txt", "noisy_train_key_list.txt", "clean_label_kv.txt", "clean_test_key_list.txt")
OLD_ENV = ("LNLBENCH_CLOTHING1M_SIZE", "LNLBENCH_CLOTHING1M_TRAIN")  # replaced by the data options


@dataclasses.dataclass(frozen=True)
class Clothing1MOptions(DatasetOptions):
    """``image_size`` (S×S pixels) and ``max_train`` (the training pool; ``"all"``: the full set, streamed)."""

    cap_option: ClassVar[str] = "max_train"
    image_size: int = 224
    max_train: int | str = "all"

    def __post_init__(self) -> None:
        for name, new in zip(OLD_ENV, ("image_size", "max_train")):
            if name in os.environ:
                raise LnlError(f"{name} is no longer read; unset it and pass --data-opt {new}=... (a trial "
                               "option, part of the trial id)")
        size, cap = self.image_size, self.max_train
        if isinstance(cap, str) and cap.strip().lower() == "all" or cap == 0:
            object.__setattr__(self, "max_train", "all")
        elif isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise LnlError(f"clothing1m data option max_train must be a positive number of images or 'all', "
                           f"got {cap!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise LnlError(f"clothing1m data option image_size must be a whole number of pixels >= 8, "
                           f"got {size!r}; e.g. --data-opt image_size=224")

    def train_cap(self) -> int | None:
        return None if self.max_train == "all" else int(self.max_train)

    @property
    def cache_name(self) -> str:
        return f"clothing1m_{self.image_size}px_{self.train_cap() or 'all'}.npz"


@register_dataset("clothing1m", options=Clothing1MOptions)
def load_clothing1m(spec: DataSpec) -> DatasetInfo:
    """Clothing1M, 14 classes, real noisy train labels: all 1M streamed, or a capped pool in memory.

    See the module docstring for the files, the two modes and the transforms."""
    settings = Clothing1MOptions.parse(spec.name, spec.options)
    files = spec.data_file is None and (spec.stream or (spec.stream is None and settings.train_cap() is None))
    if files:
        return _build(spec, settings, files=True)
    return load_named(spec, CLOTHING1M, spec.root / settings.cache_name, lambda: _build(spec, settings))


def _build(spec: DataSpec, settings: Clothing1MOptions, files: bool = False) -> DatasetInfo:
    """The lists read and checked; the images decoded at S×S, or (``files``) as paths to stream."""
    folder = spec.root / "clothing1m"
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise LnlError(f"clothing1m not found: {folder} lacks {', '.join(missing)}; put the official files "
                       f"({', '.join(FILES)}) and the image folders there, or use --data-file")
    noisy = _key_labels(folder / "noisy_label_kv.txt")
    clean = _key_labels(folder / "clean_label_kv.txt")
    train_keys = _lines(folder / "noisy_train_key_list.txt")
    test_keys = _lines(folder / "clean_test_key_list.txt")
    if not train_keys or not test_keys:
        raise LnlError(f"clothing1m: an image list in {folder} is empty; copy the official key lists again")
    y_noisy = _lookup(train_keys, noisy, "noisy_train_key_list.txt", "noisy_label_kv.txt")
    y_test = _lookup(test_keys, clean, "clean_test_key_list.txt", "clean_label_kv.txt")
    val_list = folder / VAL_FILE
    val_keys = _lines(val_list) if val_list.is_file() else []
    y_val = _lookup(val_keys, clean, VAL_FILE, "clean_label_kv.txt") if val_keys else None
    keep = capped_balanced_pool(y_noisy, settings.train_cap(), len(CLOTHING1M_CLASSES))
    path_of = _image_paths(folder, train_keys[0])
    size = settings.image_size
    if files:  # 8/7·S canvases (256 for 224), the crop taken on the device
        first = path_of(train_keys[int(keep[0])])
        if not first.is_file():
            raise LnlError(f"clothing1m image {first} is missing: put the image folders (0/ ... 9/) of the "
                           f"release under {folder}")
        canvas = size * 8 // 7
        cut = len(str(path_of(train_keys[0]))) - len(str(folder / train_keys[0][7:]))  # 7 with images/ kept
        root = os.fsencode(str(folder)) + b"/"  # plain bytes concatenation: 1M Path objects take seconds
        as_files = lambda keys: ImageFiles(np.array([root + os.fsencode(k[7 - cut:]) for k in keys],
                                                    dtype=np.bytes_), canvas)
        images = (as_files([train_keys[i] for i in keep]), as_files(test_keys),
                  as_files(val_keys) if val_keys else None)
        extra = dict(crop_size=size, crop_padding=0)
    else:
        _check_memory(len(keep) + len(test_keys) + len(val_keys), size)
        images = (_decode([path_of(train_keys[i]) for i in keep], size), _decode([path_of(k) for k in test_keys],
                  size), _decode([path_of(k) for k in val_keys], size) if val_keys else None)
        extra = {}
    return DatasetInfo(name=spec.name, x_train=images[0], y_train=y_noisy[keep], x_test=images[1], y_test=y_test,
                       classes=_classes(folder), mean=CLOTHING1M.mean, std=CLOTHING1M.std,
                       y_train_given_noisy=y_noisy[keep], train_index=keep, source=str(folder),
                       x_val=images[2], y_val=y_val, **extra)


def capped_balanced_pool(labels: np.ndarray, cap: int | None, num_classes: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``cap`` samples, at most ⌊cap / num_classes⌋ per label: the loader's fixed pool.

    Not DivideMix's per-epoch rule (``lnlbench.methods.dividemix.balanced_epoch_sample``), which keeps a
    sample while its class has fewer than cap/C (so up to ⌈cap/C⌉) and the set fewer than cap, in shuffled
    order, drawn on the device every epoch: here the pool is drawn once on the host (seed 0), sorted so the
    cache is stable, and never exceeds ⌊cap/C⌋ per class (63,994 for 64,000 over 14 classes).
    """
    if cap is None or cap >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    per_class = cap // num_classes
    shuffled = labels[order]
    # rank of each shuffled sample among those with its label: keep the first per_class of each label
    rank = np.empty(len(order), dtype=np.int64)
    for c in np.unique(shuffled):
        hit = shuffled == c
        rank[hit] = np.arange(hit.sum())
    return np.sort(order[rank < per_class])


def _decode(paths: list[Path], size: int) -> np.ndarray:
    from torchvision.transforms import functional as tf

    short = size * 8 // 7  # 256 for 224, DivideMix's Resize(256) + CenterCrop(224)
    return decode_images(paths, (size, size), lambda img: tf.center_crop(tf.resize(img, short), [size, size]))


def _image_paths(folder: Path, first_key: str) -> Callable[[str], Path]:
    """DivideMix's ``root + key[7:]``; a tree that kept the ``images/`` prefix is accepted too."""
    if not (folder / first_key[7:]).is_file() and (folder / first_key).is_file():
        return lambda key: folder / key
    return lambda key: folder / key[7:]


def _classes(folder: Path) -> list[str]:
    """The class names in label order: the release's ``category_names_eng.txt`` (line i names label i)
    where present, which must agree with the 14 known names; else those names."""
    path = folder / CLASS_FILE
    if not path.is_file():
        return list(CLOTHING1M_CLASSES)
    names = _lines(path)
    if [n.lower() for n in names] != [n.lower() for n in CLOTHING1M_CLASSES]:
        raise LnlError(f"{path} lists {len(names)} classes ({', '.join(names[:3])}, ...), not Clothing1M's 14 "
                       f"in label order ({', '.join(CLOTHING1M_CLASSES[:3])}, ...); copy it from the release")
    return names


def _key_labels(path: Path) -> dict[str, int]:
    table = {}
    for n, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= len(CLOTHING1M_CLASSES):
            raise LnlError(f"{path} line {n}: expected '<key> <label 0-13>', got {line[:60]!r}")
        table[parts[0]] = int(parts[1])
    return table


def _lookup(keys: list[str], table: dict[str, int], list_name: str, kv_name: str) -> np.ndarray:
    try:
        return np.fromiter((table[k] for k in keys), dtype=np.int64, count=len(keys))
    except KeyError as exc:
        raise LnlError(f"key {exc} of {list_name} has no label in {kv_name}; the file lists do not "
                       "match: take both from the same release") from None


def _lines(path: Path) -> list[str]:
    return [s.strip() for s in path.read_text().splitlines() if s.strip()]


def _check_memory(n: int, size: int) -> None:
    need = n * size * size * 3
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * have:
        raise LnlError(f"clothing1m: {n} images at {size}x{size} need {need / 2**30:.0f} GiB, more than this "
                       f"machine's memory ({have / 2**30:.0f} GiB); lower --data-opt max_train or image_size")
