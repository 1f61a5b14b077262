"""mini-WebVision (Li et al. 2017; the protocol of Jiang et al. 2018 / DivideMix): the first 50 classes of
WebVision 1.0's Google subset, real web noise, tested on WebVision's validation set and on the ImageNet
ILSVRC12 validation images of the same 50 classes.

Files, under ``<root>/webvision``, as DivideMix's ``dataloader_webvision.py`` (LiJunnan1992/DivideMix) and
ELR+'s ``ELR_plus/data_loader/webvision.py`` (shengliu66/ELR) read them from WebVision 1.0's *resized*
release (short side 256):

- ``info/train_filelist_google.txt``: ``<path> <label>`` lines, the image at ``<root>/webvision/<path>``
  (``google/q0001/...``); the samples with label < ``num_classes`` (50) are the training set, in file
  order (≈ 66k images), their labels the noisy ones (``given`` noise; clean train labels are unknown,
  so nothing is scored against them, as for Clothing1M);
- ``info/val_filelist.txt``: ``<name> <label>``, the image at ``val_images_256/<name>``: the test set
  (label < 50: 2,500 images);
- ``imagenet/val/<c>/*`` for c < 50 (ILSVRC12 validation images sorted into one folder per WebVision
  class index, as DivideMix's ``imagenet_dataset`` reads them, in sorted file order): the second test set,
  reported per epoch as ``imagenet_acc`` (optional: skipped with a note when the folder is absent);
- ``info/synsets.txt`` (optional): the class names, line i = class i (``n01440764 tench, ...``).

The images stream (``lnlbench.stream``): decoded to 256-px canvases (short side resized to 256, the
central square), then the official ``RandomCrop(227)`` + flip for training and ``CenterCrop(227)`` for
testing on the device; ImageNet's ``Resize(256)`` + ``CenterCrop(227)`` is the same pair of steps.
Deviation: the random crop moves within the central 256 square of a non-square image. Normalisation:
ImageNet's mean and std, as both official loaders.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from lnlbench.errors import LnlError
from lnlbench.registry import register_dataset
from lnlbench.types import DatasetInfo, DatasetOptions, DataSpec, ImageFiles

from .arrayfile import Preset, load_array_file

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRAIN_LIST, VAL_LIST = "info/train_filelist_google.txt", "info/val_filelist.txt"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# --data-file (arrays at the crop size): ImageNet normalisation, crops shifted by up to 1/14 of the side
ARRAYS = Preset(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_padding=lambda h: h // 14, flip=True)


@dataclasses.dataclass(frozen=True)
class WebVisionOptions(DatasetOptions):
    """``num_classes`` (the first N classes; 50: mini-WebVision) and ``image_size`` (the crop; 227)."""

    num_classes: int = 50
    image_size: int = 227

    def __post_init__(self) -> None:
        for name, low, high in (("num_classes", 2, 1000), ("image_size", 8, 4096)):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or not low <= val <= high:
                raise LnlError(f"webvision data option {name} must be a whole number in [{low}, {high}], "
                               f"got {val!r}")

    @property
    def canvas(self) -> int:
        return self.image_size * 256 // 227  # 256 for the official 227 crop


@register_dataset("webvision", options=WebVisionOptions)
def load_webvision(spec: DataSpec) -> DatasetInfo:
    """mini-WebVision: WebVision 1.0 Google images of the first 50 classes, streamed; ImageNet val beside."""
    opts = WebVisionOptions.parse(spec.name, spec.options)
    if spec.data_file is not None:
        path = Path(spec.data_file).expanduser()
        return ARRAYS.apply(load_array_file(path, spec.name, ARRAYS), str(path))
    if spec.stream is False:
        raise LnlError("webvision is read from its image files; drop --no-stream")
    folder = spec.root / "webvision"
    missing = [f for f in (TRAIN_LIST, VAL_LIST) if not (folder / f).is_file()]
    if missing:
        raise LnlError(f"webvision not found: {folder} lacks {', '.join(missing)}; put WebVision 1.0's resized "
                       f"release there (info/, google/, val_images_256/; imagenet/val/<class>/ for the second "
                       "test set), or use --data-file")
    train_paths, y_train = _file_list(folder / TRAIN_LIST, folder, opts.num_classes)
    test_paths, y_test = _file_list(folder / VAL_LIST, folder / "val_images_256", opts.num_classes)
    if not len(train_paths) or not len(test_paths):
        raise LnlError(f"webvision: no image of the first {opts.num_classes} classes in {folder / TRAIN_LIST} "
                       f"or {folder / VAL_LIST}; copy the lists again")
    if not Path(str(train_paths[0])).is_file():
        raise LnlError(f"webvision image {train_paths[0]} is missing: put the google/ folder under {folder}")
    canvas = opts.canvas
    extra = {}
    imagenet = _imagenet(folder / "imagenet" / "val", opts.num_classes)
    if imagenet is not None:
        extra["imagenet"] = (ImageFiles(imagenet[0], canvas), imagenet[1])
    else:
        print(f"lnlbench: note: no {folder / 'imagenet' / 'val'}/<class>/ folders; ImageNet accuracy is not "
              "reported", file=sys.stderr)
    return DatasetInfo(name=spec.name, x_train=ImageFiles(train_paths, canvas), y_train=y_train,
                       x_test=ImageFiles(test_paths, canvas), y_test=y_test,
                       classes=_classes(folder, opts.num_classes), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       crop_padding=0, flip=True, y_train_given_noisy=y_train, source=str(folder),
                       crop_size=opts.image_size, extra_tests=extra)


def _file_list(path: Path, base: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(paths under ``base``, labels) of the ``<path> <label>`` lines with label < num_classes, in order."""
    paths, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise LnlError(f"{path} line {n}: expected '<image path> <label>', got {line[:60]!r}")
        if int(parts[1]) < num_classes:
            paths.append(str(base / parts[0]))
            labels.append(int(parts[1]))
    return np.array(paths, dtype=np.str_), np.array(labels, dtype=np.int64)


def _imagenet(folder: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """DivideMix's ImageNet validation images: ``<folder>/<c>/*`` for c < num_classes, files sorted."""
    if not folder.is_dir():
        return None
    paths, labels = [], []
    for c in range(num_classes):
        sub = folder / str(c)
        if not sub.is_dir():
            raise LnlError(f"webvision: {folder} has no folder {c}/; sort the ImageNet validation images of "
                           f"the first {num_classes} WebVision classes into {folder}/0/ ... {num_classes - 1}/")
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        labels += [c] * len(files)
    return np.array(paths, dtype=np.str_), np.array(labels, dtype=np.int64)


def _classes(folder: Path, num_classes: int) -> list[str]:
    """Class names from ``info/synsets.txt`` (``<wnid> <name>, ...`` per line), else ``class_<i>``."""
    path = folder / "info" / "synsets.txt"
    if path.is_file():
        lines = [s.strip() for s in path.read_text().splitlines() if s.strip()]
        if len(lines) >= num_classes:
            return [(ln.split(maxsplit=1)[1] if " " in ln else ln).split(",")[0].strip() for ln in lines[:num_classes]]
    return [f"class_{i}" for i in range(num_classes)]
