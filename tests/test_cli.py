"""The command line: --help everywhere, one-line errors, the trial summary line."""
from __future__ import annotations

import json

import pytest

from lnlbench.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert "usage: lnlbench " + name in capsys.readouterr().out


def test_list_prints_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("methods:", "noise:", "datasets:", "models:"):
        assert kind in out
    assert "  ce " in out and "  symmetric " in out and "  digits " in out


def test_trial_prints_one_summary_line(tmp_path, capsys):
    code = main(["trial", "--method", "ce", "--dataset", "digits", "--noise", "symmetric", "--rate", "0.4",
                 "--seed", "0", "--epochs", "2", "--subset", "20", "--out", str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1 and out[0].startswith("ce on digits symmetric r=0.4 seed=0: best ")
    path = out[0].rsplit("-> ", 1)[1]
    assert json.loads(open(path).read())["status"] == "ok"


@pytest.mark.parametrize("argv, match", [
    (["trial", "--method", "dividemx", "--rate", "0.2"], "unknown method 'dividemx'"),
    (["trial", "--rate", "1.5"], "noise rate must be in [0, 1)"),
    (["trial", "--noise", "cifar10n", "--rate", "0.2"], "fixes the rate"),
    (["trial", "--method", "elr_plus", "--dataset", "clothing1m", "--noise", "given", "--data-opt",
      "max_train=64000"],
     "capped at 64,000 by the data option max_train; pass --data-opt max_train=192000"),
    (["trial", "--dataset", "clothing1m", "--noise", "given", "--subset", "5", "--data-opt", "image_size=big"],
     "image_size must be a whole number"),
    (["trial", "--rate", "0.2", "--data-opt", "image_size=8"], "dataset 'digits' takes no data options"),
    (["trial", "--rate", "0.2", "--eval-batch-size", "0"], "eval_batch_size must be a positive integer"),
])
def test_bad_input_is_one_line(argv, match, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lnlbench: error: ") and match in err and "\n" not in err


def test_failed_trial_exits_nonzero_with_one_line(tmp_path, capsys):
    code = main(["trial", "--dataset", "cifar10", "--rate", "0.2", "--data-root", str(tmp_path / "none"),
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("lnlbench: trial failed: LnlError:") and "\n" not in err
