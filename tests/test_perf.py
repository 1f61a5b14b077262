"""``lnlbench perf`` at tiny sizes: every figure is present, positive and finite (no timing asserts)."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from lnlbench import perf
from lnlbench.perf import inprocess
from lnlbench.perf import trials as perf_trials
from lnlbench.perf.report import grid_lines, render
from lnlbench.registry import METHODS


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """One torch thread here and in child processes: on a busy CPU, more threads than free cores make every
    OpenMP region wait for a descheduled thread (these tests took 10× longer with 2 threads on 2 busy cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(old)


TINY = replace(perf.QUICK, mode="test", n_train=128, n_test=64, batch_size=32, pairs=2, n_aug=256, aug_reps=1,
               n_method=128, method_reps=1, grid_trials=2, grid_trial_s=0.5, n_memory=64, n_stream=256, n_jpeg=8,
               stream_reps=1)


def finite(value, where="result"):
    """Every number anywhere in ``value`` is finite."""
    if isinstance(value, dict):
        for k, v in value.items():
            finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            finite(v, f"{where}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where} is {value}"


def positive(d, *keys):
    for k in keys:
        assert isinstance(d[k], (int, float)) and d[k] > 0, f"{k} = {d[k]!r}"


def test_run_perf_without_ray_reports_every_figure():
    lines = []
    r = perf.run_perf(TINY, device="cpu", skip_ray=True, methods=["ce"], log=lines.append)
    assert r["schema"] == perf.SCHEMA and len(lines) == 6
    json.loads(json.dumps(r))  # what --json writes
    finite(r)
    m = r["machine"]
    assert m["device"] == "cpu" and m["torch"] and len(m["load_average_start"]) == 3
    e = r["engine_overhead"]
    positive(e, "ratio", "engine_s", "bare_s", "full_epoch_ratio", "eval_s", "bare_eval_s", "save_s")
    assert len(e["samples"]["engine"]) == len(e["samples"]["bare"]) == TINY.pairs
    a = r["augmentation"]
    positive(a, "ratio", "device_img_s", "pil_img_s", "num_workers")
    assert [row["method"] for row in r["method_cost"]["rows"]] == ["ce"]
    assert r["method_cost"]["rows"][0]["ratio"] == 1.0
    assert r["grid_packing"] == {"skipped": "--skip-ray", "measure_s": r["grid_packing"]["measure_s"]}
    (row,) = r["memory"]["rows"]
    assert row["status"] == "ok", row
    assert row["peak_rss_mib"] >= row["start_rss_mib"] > 0 and row["peak_device_mib"] is None
    s = r["streaming"]
    positive(s, "ratio", "device_img_s", "stream_img_s", "num_workers")
    assert s["jpeg"]["rows"][0]["workers"] == 1 and all(row["img_s"] > 0 for row in s["jpeg"]["rows"])
    text = render(r)
    for head in ("1. engine overhead", "2. augmentation", "3. method cost", "4. grid packing: skipped",
                 "5. memory", "n/a (CPU)", "6. streaming", "224-px JPEGs"):
        assert head in text


def test_method_cost_times_every_registered_method(tmp_path):
    c = inprocess.method_cost(tmp_path, TINY, "cpu")
    rows = {row["method"]: row for row in c["rows"]}
    assert set(rows) == set(METHODS.names()) and c["rows"][0]["method"] == "ce"
    for row in rows.values():
        positive(row, "s_per_epoch", "ratio", "batch_size")
    finite(c)
    assert rows["dividemix"]["overrides"] == METHODS.get("dividemix").SMOKE  # the method's own, not perf's
    assert rows["dividemix"]["overrides"]["warm_up"] == 1  # the timed epoch is past the warm-up
    assert "lx" in rows["dividemix"]["logs"]  # ... and it is a MixMatch epoch, not a warm-up one


@pytest.mark.slow
def test_grid_packing_through_the_light_executor(tmp_path):
    pytest.importorskip("ray")
    g = perf_trials.grid_packing(tmp_path, TINY, "cpu", ["light"])
    x = g["executors"]["light"]
    assert x["done"] == TINY.grid_trials and x["counts"]["failed"] == 0
    positive(x, "wall_s", "ideal_s", "ratio", "mean_trial_s")
    assert g["epochs"] >= 2 and g["slots"] == TINY.grid_slots
    finite(g)
    assert grid_lines(g)[0].startswith("4. grid packing (light executor): wall")
