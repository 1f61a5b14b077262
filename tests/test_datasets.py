"""Dataset loaders: a contract every registered dataset meets, the array-file format, and each loader's files.

Every test writes its data into ``tmp_path``; nothing is downloaded. The one test that reads the real data
in ``/work/shared/data`` skips when it is absent.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import runpy
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lnlbench.config import TrialConfig, resolve
from lnlbench.datasets import DatasetInfo, DataSpec
from lnlbench.datasets.arrayfile import channel_stats, load_array_file, save_array_file
from lnlbench.datasets.cifar import CIFAR10_CLASSES
from lnlbench.datasets.clothing1m import CLOTHING1M_CLASSES, capped_balanced_pool
from lnlbench.errors import LnlError
from lnlbench.registry import DATASETS
from lnlbench.stream import decode_file
from lnlbench.types import ImageFiles

SHARED_DATA = Path("/work/shared/data")


# --- Small files in each loader's format -----------------------------------------------------------------

def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the python-version CIFAR files are protocol-2 pickles


def _hwc(rows: np.ndarray) -> np.ndarray:
    """The official batches store an image as one row of 3072 bytes: the R, G, B planes in turn."""
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def write_cifar10(root: Path, per_batch: int = 2, n_test: int = 4) -> dict[str, np.ndarray]:
    """A torchvision ``cifar-10-batches-py`` folder with a few random images; returns what it wrote."""
    rng = np.random.default_rng(0)
    raw = root / "cifar10" / "cifar-10-batches-py"
    out: dict[str, list] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for fname, n, split in [(f"data_batch_{b}", per_batch, "train") for b in range(1, 6)] + [
            ("test_batch", n_test, "test")]:
        rows, y = rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()
        _pickle(raw / fname, {"batch_label": fname, "labels": y, "data": rows,
                              "filenames": [f"{fname}_{i}.png" for i in range(n)]})
        out[f"x_{split}"].append(_hwc(rows))
        out[f"y_{split}"] += y
    _pickle(raw / "batches.meta", {"num_cases_per_batch": 10000, "label_names": list(CIFAR10_CLASSES),
                                   "num_vis": 3072})
    return {k: np.concatenate(v) if k[0] == "x" else np.array(v) for k, v in out.items()}


def write_cifar100(root: Path, n_train: int = 6, n_test: int = 3) -> dict[str, np.ndarray]:
    """A torchvision ``cifar-100-python`` folder (fine and coarse labels); returns what it wrote."""
    rng = np.random.default_rng(1)
    raw = root / "cifar100" / "cifar-100-python"
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine, rows = rng.integers(0, 100, n), rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        _pickle(raw / split, {"filenames": [f"{split}{i}.png" for i in range(n)], "batch_label": split,
                              "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(), "data": rows})
        out |= {f"x_{split}": _hwc(rows), f"y_{split}": fine, f"y_{split}_coarse": fine // 5}
    _pickle(raw / "meta", {"fine_label_names": [f"fine_{i}" for i in range(100)],
                           "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    return out


def _jpeg(path: Path, value: int, size: tuple[int, int] = (64, 64), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (value,) * len(mode)).save(path, format="JPEG")


def write_tiny(root: Path) -> None:
    """A tiny-imagenet-200 tree: 3 classes × 2 train images (one grey), 4 val images; colour = 60 × class."""
    folder, wnids = root / "tiny-imagenet-200", ["n09999999", "n01443537", "n02000000"]  # unsorted on purpose
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02000000\tthing\n")
    for k, wnid in enumerate(sorted(wnids)):
        _jpeg(folder / "train" / wnid / "images" / f"{wnid}_0.JPEG", 60 * k)
        _jpeg(folder / "train" / wnid / "images" / f"{wnid}_1.JPEG", 60 * k, mode="L")
    val = [("val_0.JPEG", "n02000000"), ("val_1.JPEG", "n01443537"), ("val_2.JPEG", "n09999999"),
           ("val_3.JPEG", "n01443537")]
    for name, wnid in val:
        _jpeg(folder / "val" / "images" / name, 60 * sorted(wnids).index(wnid))
    (folder / "val" / "val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in val))


def write_clothing1m(root: Path, n_train: int = 28, prefix: str = "", val: bool = False) -> dict[str, np.ndarray]:
    """A clothing1m folder: the four official lists (+ the clean validation list) and small JPEGs
    (grey value = 15 × label)."""
    folder = root / "clothing1m"
    noisy, clean_test, clean_val = np.arange(n_train) % 14, np.array([3, 0, 13, 7, 7]), np.array([1, 2, 12])
    train_keys = [f"images/{i % 10}/{i:02d}/train{i}.jpg" for i in range(n_train)]
    test_keys = [f"images/{i}/00/test{i}.jpg" for i in range(len(clean_test))]
    val_keys = [f"images/{i}/01/val{i}.jpg" for i in range(len(clean_val))] if val else []
    for key, y in zip(train_keys + test_keys + val_keys, list(noisy) + list(clean_test) + list(clean_val)):
        _jpeg(folder / (prefix + key[7:]), 15 * int(y), size=(40, 30))
    kv = lambda keys, ys: "".join(f"{k} {y}\n" for k, y in zip(keys, ys))
    (folder / "noisy_label_kv.txt").write_text(kv(train_keys, noisy))
    (folder / "clean_label_kv.txt").write_text(kv(test_keys, clean_test) + kv(val_keys, clean_val)
                                               + "images/9/99/only_clean.jpg 5\n")
    (folder / "noisy_train_key_list.txt").write_text("\n".join(train_keys) + "\n")
    (folder / "clean_test_key_list.txt").write_text("\n".join(test_keys) + "\n")
    if val:
        (folder / "clean_val_key_list.txt").write_text("\n".join(val_keys) + "\n")
    return {"y_noisy": noisy, "y_test": clean_test, "y_val": clean_val}


def write_webvision(root: Path, imagenet: bool = True) -> dict[str, np.ndarray]:
    """A webvision folder as the resized release lays it out: the two lists (labels 0–4 kept under
    ``num_classes=5``, 7 and 60 dropped), google/ train images, val_images_256/, imagenet/val/<c>/ and
    info/synsets.txt. Grey value = 20 × label; varied aspect ratios."""
    folder = root / "webvision"
    train = [(f"google/q{y:04d}/{i:03d}.jpg", y) for i, y in enumerate([0, 1, 2, 3, 4, 7, 0, 1, 60, 2, 3, 4])]
    val = [(f"val{i:03d}.jpg", y) for i, y in enumerate([4, 3, 2, 1, 0, 7])]
    for i, (path, y) in enumerate(train):
        _jpeg(folder / path, 20 * y % 256, size=(30 + 4 * (i % 3), 24))
    for path, y in val:
        _jpeg(folder / "val_images_256" / path, 20 * y % 256, size=(24, 30))
    (folder / "info").mkdir(parents=True, exist_ok=True)
    (folder / "info" / "train_filelist_google.txt").write_text("".join(f"{p} {y}\n" for p, y in train))
    (folder / "info" / "val_filelist.txt").write_text("".join(f"{p} {y}\n" for p, y in val))
    (folder / "info" / "synsets.txt").write_text("".join(f"n0{i:07d} name{i}, other\n" for i in range(8)))
    y_imagenet = np.array([0, 0, 1, 2, 3, 4, 4])
    if imagenet:
        for i, y in enumerate(y_imagenet):
            _jpeg(folder / "imagenet" / "val" / str(y) / f"ILSVRC_{9 - i}.JPEG", 20 * int(y), size=(40, 30))
    keep = lambda pairs: np.array([y for _, y in pairs if y < 5])
    return {"y_train": keep(train), "y_test": keep(val), "y_imagenet": y_imagenet}


def _trust_cifar_files(mp: pytest.MonkeyPatch) -> None:
    """torchvision checks each CIFAR file's MD5; fake files cannot match it, the rest of its code runs."""
    mp.setattr("torchvision.datasets.cifar.check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def _spec(name: str, write: Callable[[Path], object], trust: bool = False) -> Callable[..., DataSpec]:
    def make(tmp: Path, mp: pytest.MonkeyPatch) -> DataSpec:
        if trust:
            _trust_cifar_files(mp)
        write(tmp)
        return DataSpec(name, root=tmp)
    return make


def _spec_clothing(tmp: Path, mp: pytest.MonkeyPatch) -> DataSpec:
    write_clothing1m(tmp)
    # every image of the fixture, decoded (the full, streamed mode: tests/test_clothing1m_full.py)
    return DataSpec("clothing1m", root=tmp, options={"image_size": 16, "max_train": 28})


def _spec_webvision(tmp: Path, mp: pytest.MonkeyPatch) -> DataSpec:
    write_webvision(tmp)
    return DataSpec("webvision", root=tmp, options={"num_classes": 5, "image_size": 16})


# One entry per registered dataset: a new loader must bring the small files it reads.
FIXTURES: dict[str, Callable[[Path, pytest.MonkeyPatch], DataSpec]] = {
    "digits": _spec("digits", lambda tmp: None), "cifar10": _spec("cifar10", write_cifar10, trust=True),
    "cifar100": _spec("cifar100", write_cifar100, trust=True), "tiny_imagenet": _spec("tiny_imagenet", write_tiny),
    "clothing1m": _spec_clothing, "webvision": _spec_webvision,
}


def _spec_for(name: str, tmp: Path, mp: pytest.MonkeyPatch) -> DataSpec:
    if name not in FIXTURES:
        pytest.fail(f"dataset '{name}' has no fixture in tests/test_datasets.py FIXTURES: add one that writes "
                    "the small files its loader reads")
    return FIXTURES[name](tmp, mp)


# --- The contract ----------------------------------------------------------------------------------------

def check_invariants(info: DatasetInfo) -> None:
    """What the engine and the noise generators rely on, for any dataset (arrays or image files)."""
    assert info.x_test.shape[1:] == info.x_train.shape[1:] and len(info.x_train)
    _, h, w, c = info.x_train.shape
    if info.file_backed:  # decoded to (size, size) canvases, the crop taken on the device
        assert isinstance(info.x_test, ImageFiles) and info.crop_size and info.crop_size <= h == w
        assert info.image_shape == (c, info.crop_size, info.crop_size) and info.crop_padding == 0
        assert decode_file(info.x_train.path(0), h).shape == (h, w, c)
    else:
        assert info.x_train.dtype == info.x_test.dtype == np.uint8 and info.x_train.ndim == 4
        assert info.image_shape == (c, h, w)
    assert info.num_classes == len(info.classes) > 1 and all(isinstance(s, str) for s in info.classes)
    for y, x in ((info.y_train, info.x_train), (info.y_test, info.x_test)):
        assert y.dtype == np.int64 and y.shape == (len(x),) and 0 <= y.min() and y.max() < info.num_classes
    assert len(info.mean) == len(info.std) == c
    assert all(0 <= m <= 1 for m in info.mean) and all(0 < s <= 1 for s in info.std)
    assert isinstance(info.crop_padding, int) and info.crop_padding >= 0 and isinstance(info.flip, bool)
    assert info.train_index.dtype == np.int64 and info.train_index.shape == info.y_train.shape
    if info.y_train_given_noisy is not None:
        assert info.y_train_given_noisy.shape == info.y_train.shape
        assert info.y_train_given_noisy.max() < info.num_classes
    if info.y_train_coarse is not None:
        assert info.coarse_classes and info.y_train_coarse.shape == info.y_train.shape
        assert info.y_train_coarse.max() < len(info.coarse_classes)
    assert info.source


def _same(a: DatasetInfo, b: DatasetInfo) -> None:
    for name in (f.name for f in dataclasses.fields(DatasetInfo) if f.name != "source"):
        np.testing.assert_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_meets_the_contract(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec_for(name, tmp_path, monkeypatch)
    info = DATASETS.get(name)(spec)
    check_invariants(info)
    assert info.name == name
    _same(info, DATASETS.get(name)(spec))  # a second load (from the cache where there is one) agrees


# every name but those read only from image files (tests/test_webvision.py checks their --data-file)
DATA_FILE_CASES = [n for n in DATASETS.names() if n != "webvision"]


@pytest.mark.parametrize("name", DATA_FILE_CASES)
def test_every_dataset_reads_an_array_file(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--data-file`` works for every name, and the loader's own settings (mean, augmentation) stay."""
    info = DATASETS.get(name)(_spec_for(name, tmp_path / "raw", monkeypatch))
    small = info.select_train(np.arange(min(3, len(info.y_train))))
    path = save_array_file(tmp_path / "mine.npz", small)
    got = DATASETS.get(name)(DataSpec(name, root=tmp_path / "empty", data_file=path))
    check_invariants(got)
    assert got.source == str(path)
    _same(small, got)


# --- The array-file format -------------------------------------------------------------------------------

def _arrays(n: int = 6, k: int = 3, c: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n, 5, 4, c), dtype=np.uint8), "y_train": np.arange(n) % k,
            "x_test": rng.integers(0, 256, (2, 5, 4, c), dtype=np.uint8), "y_test": np.array([0, k - 1]),
            "classes": np.array([f"class {i}" for i in range(k)])}


def test_array_file_round_trip(tmp_path: Path) -> None:
    a = _arrays()
    info = DatasetInfo(name="mine", x_train=a["x_train"], y_train=a["y_train"], x_test=a["x_test"],
                       y_test=a["y_test"], classes=list(a["classes"]), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6),
                       y_train_coarse=a["y_train"] % 2, y_test_coarse=np.array([1, 0]), coarse_classes=["a", "b"],
                       y_train_given_noisy=(a["y_train"] + 1) % 3, train_index=np.arange(6) * 2)
    path = save_array_file(tmp_path / "sub" / "mine.npz", info)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))  # the temporary file was renamed
    got = load_array_file(path, "mine")
    _same(info, got)
    assert got.source == str(path) and got.y_train.dtype == np.int64


def test_array_file_minimal_grey_and_stats(tmp_path: Path) -> None:
    a = _arrays(c=1)
    a["x_train"], a["x_test"] = a["x_train"][..., 0], a["x_test"][..., 0]  # (N, H, W) grey images
    a["y_train"] = a["y_train"].astype(np.uint8)
    np.savez(tmp_path / "grey.npz", **a)
    info = load_array_file(tmp_path / "grey.npz", "grey")
    check_invariants(info)
    assert info.image_shape == (1, 5, 4) and info.train_index.tolist() == list(range(6))
    x = a["x_train"] / 255.0
    assert info.mean == pytest.approx((x.mean(),)) and info.std == pytest.approx((x.std(),))
    assert info.y_train_coarse is None and info.y_train_given_noisy is None
    rgb = _arrays(n=50)["x_train"]
    np.testing.assert_allclose(channel_stats(rgb), [rgb.reshape(-1, 3).mean(0) / 255, rgb.reshape(-1, 3).std(0) / 255])


MALFORMED = {
    "float images": (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "'x_train' has dtype float32"),
    "missing key": (lambda a: a.pop("y_test"), "missing key 'y_test'"),
    "label out of range": (lambda a: a["y_train"].__setitem__(0, 3), "'y_train' has labels in 0..3"),
    "negative label": (lambda a: a["y_test"].__setitem__(0, -1), "'y_test' has labels in -1..2"),
    "float labels": (lambda a: a.update(y_train=a["y_train"].astype(float)), "'y_train' has dtype float64"),
    "label count": (lambda a: a.update(y_train=a["y_train"][:4]), "'y_train' has shape (4,)"),
    "object classes": (lambda a: a.update(classes=np.array(["a", "b", "c"], dtype=object)),
                       "'classes' is an object"),
    "unknown key": (lambda a: a.update(y_train_noise=a["y_train"]), "unknown key 'y_train_noise'"),
    "test image size": (lambda a: a.update(x_test=a["x_test"][:, :3]), "x_test images are (3, 4, 3)"),
    "noisy out of range": (lambda a: a.update(y_train_noisy=a["y_train"] + 5), "'y_train_noisy' has labels"),
    "coarse without names": (lambda a: a.update(y_train_coarse=a["y_train"], y_test_coarse=a["y_test"]),
                             "'coarse_classes' is missing"),
    "mean shape": (lambda a: a.update(mean=np.array([0.5]), std=np.array([0.2])), "'mean' and 'std'"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_array_file_is_a_one_line_error(case: str, tmp_path: Path) -> None:
    mutate, expected = MALFORMED[case]
    a = _arrays()
    mutate(a)
    np.savez(tmp_path / "bad.npz", **a)
    with pytest.raises(LnlError) as err:
        load_array_file(tmp_path / "bad.npz", "mine")
    assert expected in str(err.value) and str(tmp_path / "bad.npz") in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_array_files(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    np.save(tmp_path / "one.npy", np.zeros(3))
    for name, expected in (("nope.npz", "array file not found"), ("junk.npz", "cannot read array file"),
                           ("one.npy", "single array")):
        with pytest.raises(LnlError, match=expected):
            load_array_file(tmp_path / name, "x")


# --- CIFAR through torchvision ---------------------------------------------------------------------------

def test_cifar10_reads_torchvision_files_then_its_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _trust_cifar_files(monkeypatch)
    wrote = write_cifar10(tmp_path)
    info = DATASETS.get("cifar10")(DataSpec("cifar10", root=tmp_path))
    for key in wrote:
        np.testing.assert_array_equal(getattr(info, key), wrote[key], err_msg=key)
    assert info.classes == list(CIFAR10_CLASSES) and info.crop_padding == 4 and info.flip
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.source.endswith("cifar-10-batches-py")
    assert (tmp_path / "cifar10.npz").is_file()
    shutil.rmtree(tmp_path / "cifar10")  # the second load needs only the cache
    again = DATASETS.get("cifar10")(DataSpec("cifar10", root=tmp_path))
    assert again.source == str(tmp_path / "cifar10.npz")
    _same(info, again)


def test_cifar100_coarse_labels_from_the_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _trust_cifar_files(monkeypatch)
    wrote = write_cifar100(tmp_path)
    info = DATASETS.get("cifar100")(DataSpec("cifar100", root=tmp_path))
    cached = load_array_file(tmp_path / "cifar100.npz", "cifar100")
    for key in wrote:
        np.testing.assert_array_equal(getattr(info, key), wrote[key], err_msg=key)
        np.testing.assert_array_equal(getattr(cached, key), wrote[key], err_msg=key)
    assert info.coarse_classes == [f"coarse_{i}" for i in range(20)] and info.classes[7] == "fine_7"
    assert info.std == (0.267, 0.256, 0.276)


def test_cifar100_array_file_without_coarse_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "c100.npz", **_arrays(k=100))
    info = DATASETS.get("cifar100")(DataSpec("cifar100", root=tmp_path, data_file=tmp_path / "c100.npz"))
    assert info.y_train_coarse is None and info.coarse_classes is None
    assert info.mean == (0.507, 0.487, 0.441)  # the loader's constants, not the file's statistics


@pytest.mark.parametrize("channels,classes,expected", [(3, CIFAR10_CLASSES[::-1], "standard cifar10 classes"),
                                                       (1, CIFAR10_CLASSES, "3-channel")])
def test_cifar10_array_file_must_fit_cifar10(channels: int, classes: tuple, expected: str, tmp_path: Path) -> None:
    np.savez(tmp_path / "c10.npz", **(_arrays(k=10, c=channels) | {"classes": np.array(classes)}))
    with pytest.raises(LnlError, match=expected):
        DATASETS.get("cifar10")(DataSpec("cifar10", root=tmp_path, data_file=tmp_path / "c10.npz"))


MISSING = {"cifar10": "cifar10/cifar-10-batches-py", "cifar100": "cifar100/cifar-100-python",
           "tiny_imagenet": "tiny-imagenet-200", "clothing1m": "clothing1m", "webvision": "webvision"}


@pytest.mark.parametrize("name", MISSING)
def test_missing_raw_files_name_the_folder_and_the_fix(name: str, tmp_path: Path) -> None:
    with pytest.raises(LnlError) as err:
        DATASETS.get(name)(DataSpec(name, root=tmp_path))
    msg = str(err.value)
    assert str(tmp_path / MISSING[name]) in msg and "--data-file" in msg and "\n" not in msg
    assert "--download" in msg if name.startswith("cifar") else True
    assert "clean_test_key_list.txt" in msg if name == "clothing1m" else True


def test_corrupted_cifar_folder(tmp_path: Path) -> None:
    write_cifar10(tmp_path)  # torchvision checks the real checksums: these files do not match them
    with pytest.raises(LnlError, match="corrupted.*--download"):
        DATASETS.get("cifar10")(DataSpec("cifar10", root=tmp_path))


# --- Tiny-ImageNet and Clothing1M ------------------------------------------------------------------------

def test_tiny_imagenet_folder_layout(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    info = DATASETS.get("tiny_imagenet")(DataSpec("tiny_imagenet", root=tmp_path))
    assert info.classes == ["goldfish, Carassius auratus", "thing", "n09999999"]  # sorted wnids
    assert info.y_train.tolist() == [0, 0, 1, 1, 2, 2] and info.y_test.tolist() == [1, 0, 2, 0]
    colour = info.x_train.reshape(len(info.x_train), -1, 3).mean(1)  # grey files became RGB
    np.testing.assert_allclose(colour, np.repeat(60.0 * info.y_train, 3).reshape(-1, 3), atol=2)
    np.testing.assert_allclose(info.x_test.mean((1, 2, 3)), 60.0 * info.y_test, atol=2)
    assert info.crop_padding == 0 and info.flip and info.mean == (0.485, 0.456, 0.406)
    assert (tmp_path / "tiny_imagenet.npz").is_file()


@pytest.mark.parametrize("prefix", ["", "images/"])
def test_clothing1m_noisy_labels_and_cap(prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrote = write_clothing1m(tmp_path, prefix=prefix)
    info = DATASETS.get("clothing1m")(DataSpec("clothing1m", root=tmp_path,
                                               options={"image_size": 14, "max_train": 14}))
    check_invariants(info)
    assert info.x_train.shape == (14, 14, 14, 3) and info.classes == list(CLOTHING1M_CLASSES)
    assert sorted(info.y_train.tolist()) == list(range(14))  # one per class: class-balanced cap
    np.testing.assert_array_equal(info.y_train, wrote["y_noisy"][info.train_index])
    np.testing.assert_array_equal(info.y_train_given_noisy, info.y_train)
    np.testing.assert_array_equal(info.y_test, wrote["y_test"])
    np.testing.assert_allclose(info.x_train.mean((1, 2, 3)), 15.0 * info.y_train, atol=2)
    assert info.crop_padding == 1 and (tmp_path / "clothing1m_14px_14.npz").is_file()


def test_clothing1m_clean_validation_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrote = write_clothing1m(tmp_path, val=True)
    spec = DataSpec("clothing1m", root=tmp_path, options={"image_size": 14, "max_train": 28})  # decoded
    info = DATASETS.get("clothing1m")(spec)
    assert info.x_val.shape == (3, 14, 14, 3)
    np.testing.assert_array_equal(info.y_val, wrote["y_val"])
    np.testing.assert_allclose(info.x_val.mean((1, 2, 3)), 15.0 * info.y_val, atol=2)
    again = DATASETS.get("clothing1m")(spec)  # from the array-file cache
    np.testing.assert_array_equal(again.x_val, info.x_val)
    np.testing.assert_array_equal(again.y_val, info.y_val)
    assert info.select_train(np.arange(5)).x_val is info.x_val


@pytest.mark.parametrize("options,match", [({"image_size": "big"}, "image_size must be"),
                                           ({"max_train": -3}, "max_train must be"),
                                           ({"imagesize": 32}, "did you mean 'image_size'")])
def test_clothing1m_bad_setting(options: dict, match: str, tmp_path: Path) -> None:
    for fn in (lambda: DATASETS.get("clothing1m")(DataSpec("clothing1m", root=tmp_path, options=options)),
               lambda: resolve(TrialConfig(method="ce", dataset="clothing1m", noise="given", data_options=options,
                                           subset=5))):
        with pytest.raises(LnlError, match=match) as err:
            fn()
        assert "\n" not in str(err.value)


def test_clothing1m_old_environment_variables_are_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LNLBENCH_CLOTHING1M_SIZE", "112")  # once read silently; now a trial option
    with pytest.raises(LnlError, match="no longer read.*--data-opt image_size"):
        DATASETS.get("clothing1m")(DataSpec("clothing1m", root=tmp_path))


def test_clothing1m_options_enter_the_trial_id() -> None:
    cfg = dict(method="dividemix", dataset="clothing1m", noise="given")
    base = resolve(TrialConfig(**cfg))
    assert base.data_options == {"image_size": 224, "max_train": "all"}  # in full, streamed
    small = resolve(TrialConfig(**cfg, data_options={"image_size": 112}))
    more = resolve(TrialConfig(**cfg, data_options={"max_train": 128000}))
    assert len({base.trial_id, small.trial_id, more.trial_id}) == 3
    assert resolve(TrialConfig(**cfg, data_options={"image_size": 224})).trial_id == base.trial_id
    assert resolve(TrialConfig(**cfg, data_options={"max_train": 0})).trial_id == base.trial_id  # 0: all
    with pytest.raises(LnlError, match="takes no data options"):
        resolve(TrialConfig(method="ce", dataset="digits", rate=0.2, data_options={"image_size": 8}))


def test_capped_balanced_pool() -> None:
    labels = np.array([0] * 50 + [1] * 5 + [2] * 45)
    keep = capped_balanced_pool(labels, 30, 3)
    assert np.bincount(labels[keep]).tolist() == [10, 5, 10] and np.all(np.diff(keep) > 0)
    assert capped_balanced_pool(labels, None, 3).tolist() == list(range(100))


# --- Real data (optional) --------------------------------------------------------------------------------

@pytest.mark.skipif(not (SHARED_DATA / "cifar10_jpeg.npz").is_file(), reason="no shared real data here")
def test_real_cifar10_from_an_exported_array_file(tmp_path: Path) -> None:
    """The shared exporter's cifar10.npz format, on a slice of the real data (the full export takes ~10 s)."""
    decode = runpy.run_path(str(SHARED_DATA / "export.py"))["_decode"]
    d, n = np.load(SHARED_DATA / "cifar10_jpeg.npz"), 500
    np.savez(tmp_path / "cifar10.npz", x_train=decode(d["x_train_jpeg"], d["train_offsets"][:n + 1]),
             y_train=d["y_train"][:n].astype(np.int64), y_test=d["y_test"][:n].astype(np.int64),
             x_test=decode(d["x_test_jpeg"], d["test_offsets"][:n + 1]), classes=d["classes"])
    info = DATASETS.get("cifar10")(DataSpec("cifar10", root=tmp_path / "none", data_file=tmp_path / "cifar10.npz"))
    check_invariants(info)
    assert info.x_train.shape == (n, 32, 32, 3) and info.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    exact = np.load(SHARED_DATA / "cifar10_test_first20_lossless.npz")["x_test"]
    assert np.abs(info.x_test[:20].astype(int) - exact).mean() < 10  # JPEG loss only (README: MAE 4.5-8.1)
