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
    cls = METHODS.get(name)
    for floor in (cls.COMPUTE_FLOOR, cls.compute_floor(cls.Hparams()), cls.compute_floor(cls.Hparams(), {})):
        assert isinstance(floor, ComputeFloor)
        assert 1 <= floor.train <= 20 and 0 <= floor.forward <= 8 and 0 <= floor.epoch_forward <= 4
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
    assert get("unicon") == ComputeFloor(train=6, forward=6, epoch_forward=4)  # two divisions of both nets
    assert get("moit") == ComputeFloor(train=2, forward=1, epoch_forward=1)  # the kNN detection's pass
    assert get("pes_semi") == ComputeFloor(train=2, forward=1, epoch_forward=2)  # B mixed rows, two views
    assert get("promix") == ComputeFloor(train=8, epoch_forward=2)  # 2 nets × (2 views + 4 mixes of c = 0.5)


def test_floors_that_depend_on_hyperparameters_and_set_sizes():
    cls = lambda m: METHODS.get(m)
    mlnt, hp = cls("mlnt"), cls("mlnt").Hparams()
    first = lambda m, **kw: mlnt.compute_floor(replace(hp, num_fast=m, **kw))
    assert first(2).train == pytest.approx(1 + 2 * 5 / 3) and first(2).forward == 2  # teacher + pretrain net
    assert first(4).train - first(2).train == pytest.approx(2 * 5 / 3)  # each label set: 5/3 trained passes
    assert first(2, second_order=True).train - 1 == pytest.approx(2 * (first(2).train - 1))
    uni = cls("unicon")
    assert uni.compute_floor(uni.Hparams(batch_size=64), {"selection_rate": 0.5}) == uni.COMPUTE_FLOOR
    assert uni.compute_floor(uni.Hparams(batch_size=64), {"selection_rate": 0.25}) == ComputeFloor(10, 10, 4)
    pmx = cls("promix")
    assert pmx.compute_floor(pmx.Hparams(), {"chosen_fraction": 0.5}) == pmx.COMPUTE_FLOOR
    assert pmx.compute_floor(pmx.Hparams(), {"chosen_fraction": 0.25}).train == 2 * (2 + 1)
    disc = cls("disc")
    sets = {"clean_fraction": 0.5, "hard_fraction": 0.2, "purified_fraction": 0.05}
    assert disc.compute_floor(disc.Hparams(), sets).train == pytest.approx(2 + 2 * 0.75)
    assert disc.compute_floor(disc.Hparams()) == disc.COMPUTE_FLOOR == ComputeFloor(train=4)
    semi = cls("pes_semi")
    assert semi.compute_floor(semi.Hparams(), {"confident_fraction": 0.2}) == semi.COMPUTE_FLOOR  # u = 1/2
    assert semi.compute_floor(semi.Hparams(batch_size=100), {"confident_fraction": 0.8}).forward == 0.4
    sop = cls("sop_plus")
    assert sop.compute_floor(sop.Hparams()).train == 2
    assert sop.compute_floor(sop.Hparams(ratio_consistency=0.0)).train == 1  # one view
    assert cls("ce").compute_floor(cls("ce").Hparams()) == Method.COMPUTE_FLOOR
    gce = cls("gce")  # the truncation's train-set pass every prune_every epochs, averaged per epoch
    assert gce.compute_floor(gce.Hparams(prune_every=10)) == ComputeFloor(train=1, epoch_forward=0.1)
    assert gce.compute_floor(gce.Hparams(truncated=False)) == Method.COMPUTE_FLOOR


def test_peer_loss_smoke_reaches_the_peer_term_under_the_paper_recipe():
    # lnlbench perf keeps the recipe's epochs unless SMOKE sets them; the α plan is stretched over them
    from lnlbench.methods.peer_loss import alpha_at

    cls = METHODS.get("peer_loss")
    hp = replace(cls.Hparams(), **cls.SMOKE)
    assert alpha_at(0, hp.epochs, hp.alpha_plan, hp.plan_epochs) == 0
    assert all(alpha_at(e, hp.epochs, hp.alpha_plan, hp.plan_epochs) > 0 for e in (1, 2, 3))


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


class _Net:
    """A method-like object: one network, its SGD, and a per-sample tensor that is not a network."""

    def __init__(self):
        self.model = torch.nn.Linear(2, 2)
        self.noise = torch.nn.Parameter(torch.zeros(4))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.optimizer.add_param_group({"params": [self.noise], "lr": 1.0})  # as SOP's u and v


def test_the_step_counter_counts_only_steps_of_the_method_networks():
    from lnlbench.components.metaclf import fit_meta_classifier

    m = _Net()
    side = torch.nn.Parameter(torch.zeros(3))
    side_opt = torch.optim.Adam([side])
    with StepCounter(m) as count:
        for _ in range(3):
            m.model(torch.ones(1, 2)).sum().backward()
            m.optimizer.step()  # the network's (with the extra group): once per step
            side.grad = torch.ones(3)
            side_opt.step()  # over no parameter of the method's networks: not counted
        g = torch.Generator().manual_seed(0)
        fit_meta_classifier(torch.randn(8, 6, generator=g), torch.arange(8) % 2, g, steps=5)  # TSSD's MLP
        m.model = torch.nn.Linear(2, 2)  # a rebuilt layer (PES renews its stage): its new optimizer counts
        torch.optim.Adam(m.model.parameters()).step()
    assert count.steps == 4


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
