"""Tiny-ImageNet-200 (Stanford CS231n): 64×64×3, 200 classes, 500 train images per class, 10,000 labelled val.

Read from the standard release layout under ``<root>/tiny-imagenet-200``::

    wnids.txt                          the 200 WordNet ids
    words.txt                          "<wnid>\\t<names>" (the full release lists all of WordNet; optional)
    train/<wnid>/images/*.JPEG         training images
    val/images/val_<i>.JPEG            validation images
    val/val_annotations.txt            "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per validation image

Protocol (methods.md §8; UNICON's ``dataloader_tiny.py``, nazmul-karim170/UNICON):

- class index = position in the sorted wnids, the torchvision ``ImageFolder`` convention UNICON's
  ``find_classes`` follows; class names are the ``words.txt`` entries (the wnid when it is missing);
- training images in ``ImageFolder`` order: classes by sorted wnid, files by sorted name; ``train_index``
  is the position in that order;
- the labelled validation set is the test set (the official test labels are not public), in the order of
  ``val_annotations.txt``;
- decoded with PIL ``.convert("RGB")`` (some images are grey);
- ImageNet normalisation, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), and horizontal flip, as
  UNICON. UNICON's ``RandomCrop(64)`` has no padding, so on 64×64 images it is the identity: crop padding 0.
  Other papers pad; set the engine's augmentation explicitly to reproduce them.

Decoding 110,000 small JPEGs takes a while (about 0.2 ms each), so the arrays are cached in
``<root>/tiny_imagenet.npz`` after the first load (delete it to rebuild). There is no download: the release
is ``http://cs231n.stanford.edu/tiny-imagenet-200.zip``, unzipped into ``<root>``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lnlbench.errors import LnlError
from lnlbench.registry import register_dataset
from lnlbench.types import DatasetInfo, DataSpec

from .arrayfile import Preset, decode_images, load_named

TINY_IMAGENET = Preset(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_padding=0, flip=True)
IMAGE_SIZE = (64, 64)


@register_dataset("tiny_imagenet")
def load_tiny_imagenet(spec: DataSpec) -> DatasetInfo:
    """Tiny-ImageNet-200, 64×64×3, 200 classes; the labelled val set is the test set."""
    return load_named(spec, TINY_IMAGENET, spec.root / "tiny_imagenet.npz", lambda: _build(spec))


def _build(spec: DataSpec) -> DatasetInfo:
    folder = spec.root / "tiny-imagenet-200"
    _check_layout(folder, spec.download)
    wnids = sorted(_lines(folder / "wnids.txt"))
    names = _class_names(folder / "words.txt", wnids)
    train_files, y_train = _train_files(folder, wnids)
    test_files, y_test = _val_files(folder, {w: i for i, w in enumerate(wnids)})
    return DatasetInfo(name=spec.name, x_train=decode_images(train_files, IMAGE_SIZE), y_train=y_train,
                       x_test=decode_images(test_files, IMAGE_SIZE), y_test=y_test, classes=names,
                       mean=TINY_IMAGENET.mean, std=TINY_IMAGENET.std, source=str(folder))


def _check_layout(folder: Path, download: bool) -> None:
    needed = [folder / "wnids.txt", folder / "train", folder / "val" / "images",
              folder / "val" / "val_annotations.txt"]
    missing = [p for p in needed if not p.exists()]
    if missing:
        note = " (--download is not available for Tiny-ImageNet)" if download else ""
        raise LnlError(f"tiny_imagenet not found: {missing[0]} is missing; unzip "
                       f"http://cs231n.stanford.edu/tiny-imagenet-200.zip into {folder.parent}, or use "
                       f"--data-file{note}")


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _class_names(words: Path, wnids: list[str]) -> list[str]:
    """The ``words.txt`` name of each wnid (the wnid itself where there is none)."""
    table: dict[str, str] = {}
    if words.is_file():
        for line in words.read_text().splitlines():
            wnid, _, name = line.partition("\t")
            table[wnid.strip()] = name.strip()
    return [table.get(w) or w for w in wnids]


def _train_files(folder: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    counts: list[int] = []
    for wnid in wnids:
        found = sorted(p for p in (folder / "train" / wnid / "images").glob("*") if p.suffix.lower() == ".jpeg")
        if not found:
            raise LnlError(f"tiny_imagenet: no training images in {folder / 'train' / wnid / 'images'}; "
                           "the folder is incomplete: unzip the release again")
        files += found
        counts.append(len(found))
    return files, np.repeat(np.arange(len(wnids), dtype=np.int64), counts)


def _val_files(folder: Path, index: dict[str, int]) -> tuple[list[Path], np.ndarray]:
    ann = folder / "val" / "val_annotations.txt"
    files, labels = [], []
    for n, line in enumerate(_lines(ann), start=1):
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise LnlError(f"{ann} line {n}: expected '<file>\\t<wnid>...' with a wnid from wnids.txt, "
                           f"got {line[:60]!r}")
        files.append(folder / "val" / "images" / parts[0])
        labels.append(index[parts[1]])
    return files, np.asarray(labels, dtype=np.int64)
