"""Live progress: plain lines of `lnlbench trial` in logs/CI, and epoch / total + ETA in `lnlbench status`."""
from __future__ import annotations

import io
import json
import re

import pytest

from lnlbench.cli import main
from lnlbench.config import TrialConfig
from lnlbench.engine import run_trial
from lnlbench.progress import TrialProgress, duration
from lnlbench.runner.status import collect

LINE = re.compile(r"^ce digits: epoch (\d+)/(\d+)  loss \d+\.\d{4}  test acc [01]\.\d{4}  s/epoch \d+\.\d\d  "
                  r"ETA \d+:\d\d:\d\d$")


def test_plain_lines_every_few_epochs_with_every_figure():
    out = io.StringIO()  # not a terminal: plain lines
    progress = TrialProgress(25, "m d", stream=out)
    assert progress.mode == "lines" and progress.every == 2
    for epoch in range(25):
        progress(epoch, {"loss": 1.0, "test_acc": 0.5, "selection": {"precision": 0.9}})
    lines = out.getvalue().splitlines()
    assert [int(re.search(r"epoch (\d+)/25", ln).group(1)) for ln in lines] == [1, *range(2, 25, 2), 25]
    assert re.fullmatch(r"m d: epoch 1/25  loss 1\.0000  test acc 0\.5000  sel prec 0\.900  s/epoch \d\.\d\d  "
                        r"ETA 0:00:\d\d", lines[0])
    assert lines[-1].endswith("ETA 0:00:00")
    assert duration(3725.2) == "1:02:05" and duration(None) == "?"


def test_lnlbench_trial_prints_plain_progress_lines(tmp_path, capsys):
    rc = main(["trial", "--epochs", "3", "--subset", "20", "--rate", "0.4", "--out", str(tmp_path / "t"),
               "--data-root", str(tmp_path / "data"), "--device", "cpu"])
    assert rc == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert [LINE.match(ln).group(1, 2) for ln in lines] == [("1", "3"), ("2", "3"), ("3", "3")], lines
    assert "best" in captured.out and "epochs in" in captured.out  # the summary line is unchanged
    main(["trial", "--epochs", "3", "--subset", "20", "--rate", "0.4", "--out", str(tmp_path / "t"),
          "--data-root", str(tmp_path / "data"), "--device", "cpu", "--progress", "off", "--restart"])
    assert capsys.readouterr().err == ""


class Stop(BaseException):
    """Not an Exception: the engine does not catch it (as an interrupt), result.json stays "running"."""


def test_status_shows_epoch_of_total_of_a_running_trial(tmp_path):
    run = tmp_path / "run"
    cfg = TrialConfig(method="ce", dataset="digits", noise="symmetric", rate=0.4, seed=0, epochs=3, subset=20,
                      out_dir=str(run / "trials"), data_root=str(tmp_path / "data"), device="cpu")

    def stop_after_first(epoch, rec, ckpt):
        raise Stop

    with pytest.raises(Stop):
        run_trial(cfg, on_epoch_end=stop_after_first)
    (tid,) = [p.name for p in (run / "trials").iterdir()]
    (run / "cells.json").write_text(json.dumps({tid: cfg.to_dict(), "f" * 16: {}}))  # and one pending
    status = collect(run)
    cell = next(c for c in status.cells if c.trial_id == tid)
    assert (cell.state, cell.epochs, cell.epochs_total) == ("running", "1/3", 3)
    table = status.table()
    assert re.search(rf"{tid}\s+running\s+1/3\s+\d+\.\d\d", table)
    assert f"running: {tid[:12]} 1/3; ETA 0:" in table.splitlines()[-1]


def test_grid_eta_from_finished_and_running_trials(tmp_path):
    run = tmp_path / "run"
    trials = {"a": ("ok", 10, 20.0), "b": ("running", 2, 4.0), "c": None}
    (run / "trials").mkdir(parents=True)
    (run / "cells.json").write_text(json.dumps({t: {} for t in trials}))
    for tid, spec in trials.items():
        if spec:
            (run / "trials" / tid).mkdir()
            res = {"status": spec[0], "epochs_done": spec[1], "wall_time_s": spec[2], "hparams": {"epochs": 10}}
            (run / "trials" / tid / "result.json").write_text(json.dumps(res))
    status = collect(run)
    # b: 8 epochs left at 2 s = 16 s; c: as long as the finished a (20 s); one trial runs at a time
    assert status.eta_s() == pytest.approx(36.0)
    assert status.progress_line() == "3 trials: 1 done, 1 running, 0 failed, 1 pending; running: b 2/10; ETA 0:00:36"
