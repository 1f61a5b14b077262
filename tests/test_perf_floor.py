"""Compute floors: every registered method declares one (or takes the default), the floor arithmetic, and
the method-cost figure's floor columns on a tiny run."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from lnlbench import perf
from lnlbench.contract import ComputeFloor, Method
from lnlbench.perf import inprocess
from lnlbench.perf.inprocess import StepCounter, floor_ratio, floor_seconds
from lnlbench.perf.report import method_lines
from lnlbench.registry import METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_has_a_sane_compute_floor(name):
    floor = METHODS.get(name).COMPUTE_FLOOR
    assert isinstance(floor, ComputeFloor)
    assert 1 <= floor.train <= 8 and 0 <= floor.forward <= 8 and 0 <= floor.epoch_forward <= 4
    nt, nf = floor.rows(64)
    assert nt >= 64 and nf >= 0


def test_the_default_floor_is_one_forward_backward_of_one_net():
    assert Method.COMPUTE_FLOOR == ComputeFloor(train=1, forward=0, epoch_forward=0) == METHODS.get("ce").COMPUTE_FLOOR


def test_declared_floors_follow_the_algorithms():
    get = lambda m: METHODS.get(m).COMPUTE_FLOOR
    assert get("dividemix") == ComputeFloor(train=4, forward=6, epoch_forward=2)  # 4B mixed; 6B guesses; 2 divisions
    assert get("coteaching").train == 1  # per optimizer step: each net steps alone, so 2 per batch
    assert get("jocor").train == 2  # both nets in one joint step
    assert get("sop_plus").train == 2  # two views
    assert get("tssd") == get("dividemix")  # DivideMix's SSL stage


def test_a_floor_without_rows_or_with_negative_counts_is_refused():
    with pytest.raises(ValueError):
        ComputeFloor(train=0, forward=0)
    with pytest.raises(ValueError):
        ComputeFloor(epoch_forward=-1)


def test_floor_seconds_and_the_ratio():
    t = {"train": 0.02, "forward": 0.005, "eval": 0.004}
    dmx = ComputeFloor(train=4, forward=6, epoch_forward=2)
    # 30 steps × (0.02 + 0.005) + 2 passes × ⌈1000 / 64⌉ = 16 batches × 0.004
    assert floor_seconds(dmx, 30, 1000, 64, t) == pytest.approx(0.75 + 0.128)
    assert floor_seconds(ComputeFloor(), 10, 1000, 64, {"train": 0.02, "forward": 0.0, "eval": 0.004}) == 0.2
    assert floor_ratio(0.23, 0.2) == pytest.approx(1.15) and floor_ratio(1.0, 0.0) is None


def test_the_step_counter_sees_every_optimizer():
    p = torch.nn.Parameter(torch.zeros(1))
    sgd, adam = torch.optim.SGD([p], lr=0.1), torch.optim.Adam([p])
    with StepCounter() as count:
        for opt in (sgd, adam, sgd):
            p.grad = torch.ones(1)
            opt.step()
    sgd.step()  # after the block: not counted
    assert count.steps == 3


def test_method_cost_prints_each_method_beside_its_floor(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    tiny = replace(perf.QUICK, mode="test", n_test=64, batch_size=32, n_method=128, method_reps=1)
    c = inprocess.method_cost(tmp_path, tiny, "cpu", methods=["dividemix"])
    rows = {row["method"]: row for row in c["rows"]}
    for row in rows.values():
        assert row["steps"] > 0 and row["floor_s"] > 0 and math.isfinite(row["floor_ratio"])
        assert row["floor_ratio"] == pytest.approx(row["s_per_epoch"] / row["floor_s"])
    assert rows["dividemix"]["floor"] == {"train": 4, "forward": 6, "epoch_forward": 2}
    text = "\n".join(method_lines(c))
    assert "× floor" in text and "COMPUTE_FLOOR" in text and "target ≤ 1.15× its floor" in text
