"""``lnlbench perf --compare-official``: the checkout check, the official data format, the ratio arithmetic.

Nothing here needs the official code or a network: the checkouts are fakes the tests write. The one test
that runs the real official loop skips unless ``LNLBENCH_DIVIDEMIX_DIR`` names a checkout.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from lnlbench.cli import main
from lnlbench.errors import LnlError
from lnlbench.perf.official import (
    MARKERS,
    check_official,
    noise_file_path,
    ratios,
    summarise,
    write_cifar_batches,
    write_noise_file,
)
from lnlbench.perf.official_runner import patched_tree, split_main_loop
from lnlbench.perf.report import official_lines


def fake_checkout(root: Path, skip: str | None = None, lacking: tuple[str, str] | None = None) -> Path:
    """A folder with the three files holding their markers (one file left out, or one marker)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, marks in MARKERS.items():
        if name != skip:
            text = "\n".join(f"# {m}" for m in marks if lacking != (name, m))
            (root / name).write_text(text + "\n")
    return root


def test_a_fake_checkout_with_the_markers_is_accepted(tmp_path):
    assert check_official(fake_checkout(tmp_path / "dmx")) == tmp_path / "dmx"


@pytest.mark.parametrize("missing", sorted(MARKERS))
def test_a_folder_without_a_needed_file_is_refused_naming_it(tmp_path, missing):
    with pytest.raises(LnlError) as err:
        check_official(fake_checkout(tmp_path / "dmx", skip=missing))
    msg = str(err.value)
    assert "\n" not in msg and missing in msg and "github.com/LiJunnan1992/DivideMix" in msg


def test_a_file_without_its_markers_is_refused(tmp_path):
    with pytest.raises(LnlError, match="Train_cifar.py is not the official one.*def eval_train"):
        check_official(fake_checkout(tmp_path / "dmx", lacking=("Train_cifar.py", "def eval_train(")))


def test_the_cli_refuses_another_folder_in_one_line(tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.py").write_text("print('hi')\n")
    assert main(["perf", "--compare-official", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not the official DivideMix code" in err and "Train_cifar.py" in err
    assert main(["perf", "--compare-official", str(tmp_path / "absent")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_the_noise_file_is_the_official_json_at_the_official_path(tmp_path):
    labels = np.array([3, 0, 9, 9, 1], dtype=np.int64)
    path = write_noise_file(tmp_path, labels, 0.4)
    # Train_cifar.py: noise_file='%s/%.1f_%s.json' % (args.data_path, args.r, args.noise_mode)
    assert path == Path("%s/%.1f_%s.json" % (tmp_path, 0.4, "sym")) == noise_file_path(tmp_path, 0.4)
    loaded = json.load(open(path))
    assert loaded == [3, 0, 9, 9, 1] and all(type(v) is int for v in loaded)


def test_the_cifar_batches_unpickle_as_the_official_loader_reads_them(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 12)
    xt, yt = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4)
    write_cifar_batches(tmp_path, x, y, xt, yt)
    load = lambda f: pickle.load(open(tmp_path / f, "rb"), encoding="latin1")  # dataloader_cifar.unpickle
    parts = [load(f"data_batch_{i}") for i in range(1, 6)]
    data = np.concatenate([p["data"] for p in parts]).reshape((12, 3, 32, 32)).transpose((0, 2, 3, 1))
    assert (data == x.transpose(0, 2, 3, 1)).all() and sum((p["labels"] for p in parts), []) == y.tolist()
    assert (load("test_batch")["data"].reshape((4, 3, 32, 32)) == xt).all()


def test_the_size_literals_are_swapped_and_the_epoch_loop_split_off(tmp_path):
    src = tmp_path / "Train_cifar.py"
    src.write_text("import torch\nlosses = torch.zeros(50000)\nk = 10000\nfor epoch in range(3):\n    x = 50000\n")
    prefix, loop = split_main_loop(patched_tree(src, {50000: 320, 10000: 64}))
    ns: dict = {}
    exec(compile(prefix, str(src), "exec"), ns)
    assert ns["losses"].shape == (320,) and ns["k"] == 64
    exec(compile(ast.Module(body=loop.body, type_ignores=[]), str(src), "exec"), ns)
    assert ns["x"] == 320


def _epochs(warm: list[float], dmx: list[tuple[float, float, float, float, int]]) -> list[dict]:
    """Records: warm-up epoch seconds; DivideMix (epoch, division, gmm, mixmatch, iterations per net)."""
    out = [{"phase": "warmup", "epoch_s": s} for s in warm]
    for e, d, g, m, it in dmx:
        out.append({"phase": "dividemix", "epoch_s": e, "eval_train": [d / 2, d / 2], "gmm": [g / 2, g / 2],
                    "train": [m / 2, m / 2], "iterations": [it, it], "labeled": [it * 64, it * 64]})
    return out


def test_summarise_drops_the_first_epoch_of_each_phase_and_splits_the_division():
    s = summarise(_epochs([9.0, 2.0, 4.0], [(99, 9, 9, 9, 1), (10.0, 3.0, 1.0, 6.0, 10)]))
    assert s["warmup_epoch_s"] == 3.0  # median of 2.0 and 4.0; the first (9.0) untimed
    assert s["dividemix_epoch_s"] == 10.0 and s["division_s"] == 3.0 and s["gmm_s"] == 1.0
    assert s["loss_pass_s"] == 2.0 and s["mixmatch_s"] == 6.0 and s["other_s"] == pytest.approx(1.0)
    assert s["iterations"] == 20 and s["mixmatch_iteration_s"] == pytest.approx(0.3)
    one = summarise(_epochs([5.0], [(8.0, 2.0, 0.5, 5.0, 5)]))  # a single epoch per phase is timed
    assert one["warmup_epoch_s"] == 5.0 and one["dividemix_epoch_s"] == 8.0


def test_ratios_per_epoch_per_iteration_and_at_equal_labelled_sizes():
    ours = summarise(_epochs([1.0], [(10.0, 2.0, 0.5, 7.5, 15)]))  # 30 iterations of 0.25 s
    official = summarise(_epochs([2.0], [(12.0, 4.0, 0.5, 7.5, 10)]))  # 20 iterations of 0.375 s
    q = ratios(ours, official)
    assert q["warmup_epoch"] == 0.5 and q["dividemix_epoch"] == pytest.approx(10 / 12)
    assert q["division"] == 0.5 and q["gmm"] == 1.0 and q["loss_pass"] == pytest.approx(1.5 / 3.5)
    assert q["mixmatch"] == 1.0  # equal per epoch ...
    assert q["mixmatch_iteration"] == pytest.approx(0.25 / 0.375)  # ... but ours ran 1.5× the iterations
    # at the official's 20 iterations: 2.0 division + 0.5 other + 20 × 0.25 = 7.5 s vs 12 s
    assert q["dividemix_epoch_equal_labeled"] == pytest.approx(7.5 / 12)
    assert ratios({}, official)["warmup_epoch"] is None


def test_the_report_prints_the_patches_and_both_normalisations():
    ours = summarise(_epochs([1.0], [(10.0, 2.0, 0.5, 7.5, 15)]))
    official = summarise(_epochs([2.0], [(12.0, 4.0, 0.5, 7.5, 10)]))
    text = "\n".join(official_lines({
        "ours": ours, "official": official, "ratios": ratios(ours, official), "patches": "device calls (...)",
        "repo": "/x", "n_train": 1000, "model": "cnn_small", "model_kwargs": {}, "batch_size": 64, "warm_up": 1,
        "epochs": 1, "official_workers": 5}))
    assert "patched: device calls" in text and "MixMatch iteration" in text and "0.67×" in text
    assert "labelled-set sizes: 0.62×" in text


@pytest.mark.skipif(not os.environ.get("LNLBENCH_DIVIDEMIX_DIR"),
                    reason="set LNLBENCH_DIVIDEMIX_DIR to a checkout of github.com/LiJunnan1992/DivideMix")
def test_the_real_official_loop_runs_patched(tmp_path):
    import dataclasses

    from lnlbench.perf.common import QUICK
    from lnlbench.perf.official import compare_official

    sizes = dataclasses.replace(QUICK, n_official=192, n_test=32)
    r = compare_official(os.environ["LNLBENCH_DIVIDEMIX_DIR"], sizes, "cpu", warm_up=1, epochs=1, workers=0,
                         log=lambda m: None)
    assert r["official"]["iterations"] >= 2 and r["ratios"]["mixmatch_iteration"] > 0
