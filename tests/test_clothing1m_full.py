"""Clothing1M in full: the official lists as file-backed sets, streamed; class order, the per-epoch balanced
draw, the clean validation / test protocol, and the fixed-subset mode beside it (on fixtures the tests write)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_datasets import check_invariants, write_clothing1m

from lnlbench.config import TrialConfig, resolve
from lnlbench.datasets.clothing1m import CLOTHING1M_CLASSES
from lnlbench.engine import build_trial, run_trial
from lnlbench.errors import LnlError
from lnlbench.methods.dividemix import balanced_epoch_sample
from lnlbench.registry import DATASETS
from lnlbench.stream import StreamedImages
from lnlbench.types import DataSpec, ImageFiles


def _load(root: Path, stream: bool | None = None, **options) -> object:
    return DATASETS.get("clothing1m")(DataSpec("clothing1m", root=root, options={"image_size": 14, **options},
                                               stream=stream))


def test_full_set_is_file_backed_with_the_official_lists(tmp_path: Path) -> None:
    wrote = write_clothing1m(tmp_path, n_train=42, val=True)
    names = [n.lower() for n in CLOTHING1M_CLASSES]  # the release's spelling may differ in case
    (tmp_path / "clothing1m" / "category_names_eng.txt").write_text("\n".join(names) + "\n")
    info = _load(tmp_path)
    check_invariants(info)
    assert info.file_backed and info.classes == names  # label i is line i of category_names_eng.txt
    assert isinstance(info.x_val, ImageFiles) and info.x_train.size == 16 and info.image_shape == (3, 14, 14)
    np.testing.assert_array_equal(info.train_index, np.arange(42))  # every key, in list order
    np.testing.assert_array_equal(info.y_train, wrote["y_noisy"])
    np.testing.assert_array_equal(info.y_train_given_noisy, info.y_train)
    np.testing.assert_array_equal(info.y_test, wrote["y_test"])  # clean labels of the test keys
    np.testing.assert_array_equal(info.y_val, wrote["y_val"])  # clean labels of the validation keys
    assert info.x_train.path(5).endswith("clothing1m/5/05/train5.jpg")  # key[7:] under the folder
    assert info.x_test.path(0).endswith("clothing1m/0/00/test0.jpg")


def test_class_names_file_must_match(tmp_path: Path) -> None:
    write_clothing1m(tmp_path)
    (tmp_path / "clothing1m" / "category_names_eng.txt").write_text("Shirt\nT-Shirt\n")
    with pytest.raises(LnlError, match="not Clothing1M's 14 in label order") as err:
        _load(tmp_path)
    assert "\n" not in str(err.value)


def test_fixed_subset_mode_stays_and_is_in_the_trial_id(tmp_path: Path) -> None:
    write_clothing1m(tmp_path)
    decoded = _load(tmp_path, max_train=14)
    assert not decoded.file_backed and decoded.x_train.shape == (14, 14, 14, 3)
    streamed = _load(tmp_path, stream=True, max_train=14)  # the same pool, from the files
    assert streamed.file_backed and len(streamed.x_train) == 14
    np.testing.assert_array_equal(streamed.train_index, decoded.train_index)
    everything = _load(tmp_path, stream=False)  # --no-stream: the whole set decoded (memory permitting)
    assert not everything.file_backed and len(everything.y_train) == 28
    cfg = dict(method="dividemix", dataset="clothing1m", noise="given")
    ids = {resolve(TrialConfig(**cfg)).trial_id, resolve(TrialConfig(**cfg, data_options={"max_train": 64000})).trial_id,
           resolve(TrialConfig(**cfg, stream=True)).trial_id}
    assert len(ids) == 3


def test_balanced_epoch_draw_counts_and_fresh_each_epoch() -> None:
    """DivideMix's per-epoch sample (num_batches × batch_size from the full set): at most n/C per class,
    n in all, a new draw every epoch from the same generator."""
    y = torch.from_numpy(np.random.default_rng(0).integers(0, 14, 5000))
    g = torch.Generator().manual_seed(0)
    first, second = balanced_epoch_sample(y, 1400, 14, g), balanced_epoch_sample(y, 1400, 14, g)
    for draw in (first, second):
        assert len(draw) == 1400 and len(set(draw.tolist())) == 1400
        assert torch.bincount(y[draw], minlength=14).tolist() == [100] * 14
    assert set(first.tolist()) != set(second.tolist())


def test_streamed_trial_keeps_the_clean_val_and_test_protocol(tmp_path: Path) -> None:
    """A streamed DivideMix trial draws a fresh balanced subset per epoch from every key, selects by the
    clean validation set and scores nothing against the (unknown) clean train labels."""
    write_clothing1m(tmp_path / "data", n_train=56, val=True)
    hp = {"model": "cnn_small", "model_kwargs": {}, "epochs": 2, "warm_up": 1, "batch_size": 4, "num_samples": 28}
    cfg = TrialConfig(method="dividemix", dataset="clothing1m", noise="given", data_root=str(tmp_path / "data"),
                      data_options={"image_size": 14}, hparams=hp, device="cpu", loader_workers=1,
                      out_dir=str(tmp_path / "out"))
    trial = build_trial(cfg)
    assert isinstance(trial.ctx.train.x, StreamedImages) and len(trial.ctx.train) == 56
    drawn = [set(trial.method._subset(28).tolist()) for _ in range(2)]
    assert drawn[0] != drawn[1] and all(len(d) == 28 for d in drawn)
    res = run_trial(cfg, raise_on_error=True)
    assert res["status"] == "ok" and res["data"]["n_clean_val"] == 3 and res["data"]["n_train"] == 56
    assert res["data"]["image_shape"] == [3, 14, 14] and res["data"]["loader_workers"] == 1
    assert all("clean_val_acc" in r and "selection" not in r for r in res["history"])
    assert res["selected_acc"] is not None


def test_a_tree_that_kept_the_images_folder_streams_too(tmp_path: Path) -> None:
    write_clothing1m(tmp_path, prefix="images/")
    info = _load(tmp_path)
    assert info.file_backed and all(Path(info.x_train.path(i)).is_file() for i in range(len(info.x_train)))
    assert info.x_train.path(3).endswith("clothing1m/images/3/03/train3.jpg")
