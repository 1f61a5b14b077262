"""The streaming data path (lnlbench.stream): indices and transforms kept, every method runs streaming.

The fixture writes a tiny file-backed dataset (the digits as small PNG files of varied aspect ratios) and
hands the engine a loader that returns it as ``ImageFiles``, the form Clothing1M in full takes.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from lnlbench.config import TrialConfig
from lnlbench.data import load_dataset
from lnlbench.datasets.augment import Augmenter
from lnlbench.engine import build_trial, run_trial
from lnlbench.registry import METHODS
from lnlbench.stream import StreamedImages, decode_file
from lnlbench.types import DatasetInfo, ImageFiles

CANVAS, CROP = 10, 8


def _write(images: np.ndarray, folder, rng) -> ImageFiles:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        h, w = (CANVAS, CANVAS + int(rng.integers(0, 5)))[:: 1 if i % 2 else -1]  # landscape and portrait
        pil = Image.fromarray(np.repeat(img, 3, axis=2)).resize((w, h), Image.BILINEAR)
        paths.append(str(folder / f"{i}.png"))
        pil.save(paths[-1])
    return ImageFiles(np.array(paths), CANVAS)


@pytest.fixture(scope="module")
def files_info(tmp_path_factory) -> DatasetInfo:
    """Digits as PNG files: decoded to a 10-px canvas, crops of 8 px (the Clothing1M geometry, scaled)."""
    digits = load_dataset("digits")
    root, rng = tmp_path_factory.mktemp("files"), np.random.default_rng(0)
    return dataclasses.replace(digits, x_train=_write(digits.x_train, root / "train", rng),
                               x_test=_write(digits.x_test, root / "test", rng), crop_size=CROP, crop_padding=0,
                               source=str(root))


def _loader(info):
    return lambda *args, **kwargs: info


def test_image_files_stand_where_arrays_stand(files_info):
    x = files_info.x_train
    assert x.shape == (len(files_info.y_train), CANVAS, CANVAS, 3) and files_info.file_backed
    assert files_info.image_shape == (3, CROP, CROP)
    sub = files_info.select_train(np.array([5, 1]))
    assert list(sub.x_train.paths) == [x.paths[5], x.paths[1]] and list(sub.train_index) == [5, 1]
    assert decode_file(x.path(0), CANVAS).shape == (CANVAS, CANVAS, 3)  # short side resized, centre square


def test_streamed_images_keep_indices_on_every_path(files_info):
    """x[idx] is sample idx[i] in row i: on demand (tensor, array, slice, mask), planned and read ahead."""
    files = files_info.x_train
    want = np.stack([decode_file(files.path(i), CANVAS) for i in range(40)]).transpose(0, 3, 1, 2)
    x = StreamedImages.of(files[:40], torch.device("cpu"), workers=2)
    idx = torch.tensor([7, 3, 3, 39])
    assert torch.equal(x[idx], torch.from_numpy(want[[7, 3, 3, 39]]))
    assert torch.equal(x[np.array([0, 1])], torch.from_numpy(want[:2]))
    mask = torch.zeros(40, dtype=torch.bool)
    mask[[2, 9]] = True
    assert torch.equal(x[mask], torch.from_numpy(want[[2, 9]]))
    for s in range(0, 40, 16):  # a sequential pass: the next slice is read ahead
        assert torch.equal(x[s:s + 16], torch.from_numpy(want[s:s + 16]))
    batches = list(torch.randperm(40).split(9))
    for b in x.planned(batches):
        (held,) = x.stream.ready.values()
        assert x[b] is held[1]  # served by the DataLoader, decoded ahead
        assert torch.equal(x[b], torch.from_numpy(want[b.numpy()]))
    sub = x.take(torch.tensor([4, 0]))
    both = torch.cat([sub, x.take([1])])
    assert isinstance(both, StreamedImages) and torch.equal(both[:], torch.from_numpy(want[[4, 0, 1]]))
    other = StreamedImages.of(files[[39, 38]], torch.device("cpu"), workers=1)  # another source: a new one
    joined = torch.cat([sub, other])
    assert len(joined.stream.source) == 4 and torch.equal(joined[:], torch.from_numpy(want[[4, 0, 39, 38]]))
    assert torch.equal(torch.cat(list(x.sequential(16))), torch.from_numpy(want))


def test_array_stream_equals_the_on_device_path(tmp_path):
    """``stream: true`` on an in-memory dataset: the same batches, so the same trial, bit for bit."""
    base = dict(method="ce", dataset="digits", noise="symmetric", rate=0.3, epochs=2, subset=20, preset="mini",
                device="cpu", loader_workers=1)
    a = run_trial(TrialConfig(**base, out_dir=str(tmp_path / "a")), raise_on_error=True)
    b = run_trial(TrialConfig(**base, stream=True, out_dir=str(tmp_path / "b")), raise_on_error=True)
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    assert strip(a["history"]) == strip(b["history"]) and a["trial_id"] != b["trial_id"]


def test_crop_transform_train_random_test_central():
    """Canvas → crop on the device: random offsets in [0, H − crop] for training, the centre for testing."""
    aug = Augmenter.build((0.0,), (1.0,), 4, True, "cpu", crop=3)
    x = torch.arange(2 * 5 * 5, dtype=torch.uint8).view(2, 1, 5, 5)
    assert aug.normalize(x).shape == (2, 1, 3, 3)
    assert torch.equal(aug.normalize(x)[0, 0] * 255, x[0, 0, 1:4, 1:4].float())
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        out = aug.crop_flip(x, g)
        assert out.shape == (2, 1, 3, 3)
        c = out[0, 0]
        c = c if c[0, 0] < c[0, -1] else c.flip(-1)  # undo the flip
        top, left = divmod(int(c[0, 0]), 5)
        assert torch.equal(c, x[0, 0, top:top + 3, left:left + 3])
        seen.add((top, left))
    assert seen == {(t, s) for t in range(3) for s in range(3)}
    off = Augmenter.build((0.0,), (1.0,), 4, False, "cpu", crop=3, random_crop=False)
    assert torch.equal(off.crop_flip(x, g), x[..., 1:4, 1:4])


# methods made of whole-epoch stages (a CE stage, then the corrected one...): one epoch of each stage
STAGE_EPOCHS = {"forward": 2, "backward": 2, "t_revision": 3}


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_an_epoch_streaming(tmp_path, files_info, method):
    """A method written for the on-device path runs streaming unchanged (its SMOKE overrides, one epoch, or
    one epoch of each stage)."""
    cls = METHODS.get(method)
    cfg = TrialConfig(method=method, dataset="digits", noise="symmetric", rate=0.4, seed=1,
                      epochs=STAGE_EPOCHS.get(method, 1), subset=16,
                      preset="mini", hparams={**getattr(cls, "SMOKE", {}), "batch_size": 32}, device="cpu",
                      loader_workers=1, out_dir=str(tmp_path))
    trial = build_trial(cfg, load=_loader(files_info))
    assert isinstance(trial.ctx.train.x, StreamedImages) and isinstance(trial.x_test, StreamedImages)
    assert len(trial.ctx.train.x.stream.source) == len(trial.ctx.train)  # no golden or held-out image in reach
    res = run_trial(cfg, load=_loader(files_info), raise_on_error=True)
    assert res["status"] == "ok" and res["data"]["image_shape"] == [3, CROP, CROP]
    for key, val in res["history"][0].items():
        if isinstance(val, float):
            assert math.isfinite(val), f"{method}: {key} is not finite"


def test_streamed_trial_is_deterministic_and_resumes(tmp_path, files_info):
    """DivideMix streamed (planned subset passes, gathers from the batches in hand, on-demand loss passes):
    the same seed gives the same history, and a trial stopped after epoch 0 resumes to the same epoch 1."""
    hp = {**METHODS.get("dividemix").SMOKE, "batch_size": 32, "num_samples": 64}
    cfg = lambda out: TrialConfig(method="dividemix", dataset="digits", noise="symmetric", rate=0.4, seed=2,
                                  epochs=2, subset=16, preset="mini", hparams=hp, device="cpu", loader_workers=2,
                                  out_dir=str(tmp_path / out))
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    a = run_trial(cfg("a"), load=_loader(files_info), raise_on_error=True)
    b = run_trial(cfg("b"), load=_loader(files_info), raise_on_error=True)
    assert strip(a["history"]) == strip(b["history"]) and "lx" in a["history"][1]

    def stop(epoch, rec, ckpt):
        raise RuntimeError("stop")
    c = run_trial(cfg("c"), load=_loader(files_info), on_epoch_end=stop)
    assert c["status"] == "failed" and c["epochs_done"] == 1
    c = run_trial(cfg("c"), load=_loader(files_info), raise_on_error=True)
    assert strip(c["history"]) == strip(a["history"])
