"""mini-WebVision: the Google file lists of the first classes, WebVision's validation set as the test set,
ImageNet's validation images of the same classes as the second one (on fixtures the tests write)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_datasets import check_invariants, write_webvision

from lnlbench.config import TrialConfig, resolve
from lnlbench.datasets.arrayfile import save_array_file
from lnlbench.engine import run_trial
from lnlbench.errors import LnlError
from lnlbench.registry import DATASETS, METHODS
from lnlbench.types import DataSpec


def _load(root: Path, **options):
    return DATASETS.get("webvision")(DataSpec("webvision", root=root, options={"num_classes": 5,
                                                                               "image_size": 16, **options}))


def test_first_classes_of_the_google_list_in_file_order(tmp_path: Path) -> None:
    wrote = write_webvision(tmp_path)
    info = _load(tmp_path)
    check_invariants(info)
    assert info.classes == [f"name{i}" for i in range(5)]  # info/synsets.txt, line i = class i
    np.testing.assert_array_equal(info.y_train, wrote["y_train"])  # label >= num_classes dropped, order kept
    np.testing.assert_array_equal(info.y_train_given_noisy, info.y_train)  # real noise: train labels as given
    assert info.x_train.path(0).endswith("webvision/google/q0000/000.jpg")
    np.testing.assert_array_equal(info.y_test, wrote["y_test"])
    assert info.x_test.path(0).endswith("webvision/val_images_256/val000.jpg")
    images, labels = info.extra_tests["imagenet"]
    np.testing.assert_array_equal(labels, wrote["y_imagenet"])  # class folder c = WebVision class c
    assert [Path(images.path(i)).name for i in range(2)] == ["ILSVRC_8.JPEG", "ILSVRC_9.JPEG"]  # sorted per folder
    assert info.mean == (0.485, 0.456, 0.406) and info.crop_size == 16 and info.x_train.size == 18
    write_webvision(tmp_path / "b", imagenet=False)
    assert len(_load(tmp_path / "b", num_classes=50).y_train) == 11  # mini-WebVision's 50: only 60 is dropped


def test_imagenet_folder_is_optional_but_must_be_complete(tmp_path: Path, capsys) -> None:
    write_webvision(tmp_path, imagenet=False)
    assert _load(tmp_path).extra_tests == {} and "ImageNet accuracy is not reported" in capsys.readouterr().err
    (tmp_path / "webvision" / "imagenet" / "val" / "0").mkdir(parents=True)
    with pytest.raises(LnlError, match="has no folder 1/") as err:
        _load(tmp_path)
    assert "\n" not in str(err.value)


def test_array_file_and_bad_options(tmp_path: Path) -> None:
    digits = DATASETS.get("digits")(DataSpec("digits", root=tmp_path))
    rgb = digits.select_train(np.arange(20))
    rgb.x_train, rgb.x_test = (np.repeat(a, 3, axis=3) for a in (rgb.x_train, rgb.x_test))
    rgb.mean, rgb.std = (0.5,) * 3, (0.25,) * 3
    path = save_array_file(tmp_path / "wv.npz", rgb)
    got = DATASETS.get("webvision")(DataSpec("webvision", root=tmp_path, data_file=path))
    assert not got.file_backed and got.mean == (0.485, 0.456, 0.406) and len(got.y_train) == 20
    with pytest.raises(LnlError, match="num_classes must be"):
        _load(tmp_path, num_classes=1)


def test_paper_recipes_resolve_and_a_streamed_trial_reports_imagenet(tmp_path: Path) -> None:
    for method in ("dividemix", "elr_plus"):
        t = resolve(TrialConfig(method=method, dataset="webvision", noise="given", out_dir=str(tmp_path)))
        assert t.hparams.model == "inception_resnet_v2" and t.hparams.batch_size == 32
    assert METHODS.get("elr_plus").PRESETS["paper"]["webvision"]["epochs"] == 100
    write_webvision(tmp_path / "data")
    cfg = TrialConfig(method="ce", dataset="webvision", noise="given", data_root=str(tmp_path / "data"),
                      data_options={"num_classes": 5, "image_size": 16}, device="cpu", loader_workers=1,
                      hparams={"model": "cnn_small", "model_kwargs": {}, "epochs": 2, "batch_size": 4},
                      out_dir=str(tmp_path / "out"))
    res = run_trial(cfg, raise_on_error=True)
    assert res["status"] == "ok" and all(0 <= r["imagenet_acc"] <= 1 for r in res["history"])
    assert res["data"]["n_extra_test"] == {"imagenet": 7}
    assert res["data"]["image_shape"] == [3, 16, 16] and all("selection" not in r for r in res["history"])
