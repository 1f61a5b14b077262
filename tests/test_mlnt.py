"""MLNT: synthetic labels, fast weights, first- vs second-order meta-gradients, vmap vs loop, the EMA
teacher, resolve-time errors and a trial that reaches the meta phase, resumes across it and runs rounds."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lnlbench.components.fastweights import batch_stat_buffers, ce_label_set_grads, fast_forward
from lnlbench.config import TrialConfig, resolve
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.engine import run_trial
from lnlbench.errors import LnlError
from lnlbench.methods.mlnt import (
    MLNT,
    MLNTHparams,
    consistency,
    meta_loss,
    meta_schedule,
    nearest_neighbors,
    synthetic_labels,
)
from lnlbench.registry import MODELS


def _named(model):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


# -- synthetic labels ---------------------------------------------------------------------------------
def test_nearest_neighbors_exclude_self_and_sort_by_squared_distance():
    f = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    nb = nearest_neighbors(f, 4)
    d = torch.cdist(f, f) ** 2
    for i in range(12):
        assert i not in nb[i].tolist()
        others = [j for j in d[i].argsort().tolist() if j != i]
        assert nb[i].tolist() == others[:4]
    assert nearest_neighbors(f[:3], 10).shape == (3, 2)  # a small batch uses its B − 1 others


@pytest.mark.parametrize("ratio", [0.5, 0.3, 1.0])
def test_synthetic_labels_change_exactly_rho_b_samples_to_a_neighbours_label(ratio):
    b, k, m = 20, 5, 7
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(b, 8, generator=g)
    y = torch.arange(b)  # all labels distinct: every replacement changes the label
    nb = nearest_neighbors(feats, k)
    labels, mask = synthetic_labels(y, nb, m, ratio, g)
    assert labels.shape == mask.shape == (m, b)
    assert (mask.sum(1) == int(b * ratio)).all()
    assert torch.equal(labels != y, mask)  # changed exactly where replaced, nowhere else
    for s in range(m):
        for i in mask[s].nonzero().flatten().tolist():
            assert int(labels[s, i]) in y[nb[i]].tolist()  # only to a neighbour's label
    assert len({tuple(r) for r in labels.tolist()}) > 1  # sets draw different samples or neighbours


# -- fast weights -------------------------------------------------------------------------------------
def _small_cnn():
    torch.manual_seed(0)
    return MODELS.get("cnn_small")(num_classes=4, in_channels=3, image_size=8, widths=(4, 8)).train()


def test_fast_weight_step_equals_manual_sgd_and_keeps_running_stats():
    model = _small_cnn()
    x = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 4, (3, 10), generator=torch.Generator().manual_seed(3))
    logits = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names, params = _named(model)
    for batched in (True, False):
        grads = ce_label_set_grads(logits, params, labels, batched=batched)
        for use_vmap in (True, False):
            fast = fast_forward(model, names, params, grads, 0.3, x, use_vmap=use_vmap)
            for s in range(3):
                ref = copy.deepcopy(model)
                opt = torch.optim.SGD(ref.parameters(), lr=0.3)
                F.cross_entropy(ref(x), labels[s]).backward()  # ref's batch stats = logits' (same x, weights)
                opt.step()
                for (n, p), g in zip(ref.named_parameters(), grads):
                    assert torch.allclose(p, dict(model.named_parameters())[n] - 0.3 * g[s], atol=1e-6)
                assert torch.allclose(fast[s], ref.train()(x), atol=1e-5)
    for k, v in model.state_dict().items():  # the fast passes updated no running statistic
        assert torch.equal(v, before[k]), k
    assert set(batch_stat_buffers(model)) == {k for k in before if k.rsplit(".", 1)[1] in
                                              ("running_mean", "running_var", "num_batches_tracked")}


def _tiny_mlp():
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


def _hp(**kw):
    return MLNTHparams(model="mlp", model_kwargs={}, meta_lr=0.5, num_fast=3, **kw)


def test_second_order_matches_autograd_through_the_inner_step_and_differs_from_first_order():
    model = _tiny_mlp()
    g = torch.Generator().manual_seed(5)
    x, labels = torch.randn(8, 5, generator=g), torch.randint(0, 3, (3, 8), generator=g)
    p_t = F.softmax(torch.randn(8, 3, generator=g), 1)
    names, params = _named(model)

    def grads_of(hp):
        model.zero_grad()
        meta_loss(model, model(x), x, labels, p_t, hp).backward()
        return [p.grad.clone() for p in params]

    so, fo = grads_of(_hp(second_order=True)), grads_of(_hp())
    theta = {n: p.detach() for n, p in zip(names, params)}
    f = lambda w: torch.func.functional_call(model, w, (x,))

    def outer(w):  # the meta-loss as a function of θ, differentiated by torch.func end to end
        total = 0.0
        for y in labels:
            inner = torch.func.grad(lambda v, y=y: F.cross_entropy(f(v), y))(w)
            total = total + consistency(f({n: w[n] - 0.5 * inner[n] for n in w}), p_t)
        return total / len(labels)

    ref_so = torch.func.grad(outer)(theta)
    ref_fo = {n: torch.zeros_like(t) for n, t in theta.items()}
    for y in labels:  # first order: ∇θ′ at θ′ = θ − lr·g with g held constant
        inner = torch.func.grad(lambda v, y=y: F.cross_entropy(f(v), y))(theta)
        fast = {n: theta[n] - 0.5 * inner[n] for n in theta}
        gf = torch.func.grad(lambda v: consistency(f(v), p_t))(fast)
        ref_fo = {n: ref_fo[n] + gf[n] / len(labels) for n in theta}
    for n, a, b in zip(names, so, fo):
        assert torch.allclose(a, ref_so[n], atol=1e-6), n
        assert torch.allclose(b, ref_fo[n], atol=1e-6), n
    assert max(float((a - b).abs().max()) for a, b in zip(so, fo)) > 1e-4


@pytest.mark.parametrize("second_order", [False, True])
def test_vmapped_and_looped_meta_loss_agree(second_order):
    model = _small_cnn()
    g = torch.Generator().manual_seed(6)
    x, labels = torch.randn(10, 3, 8, 8, generator=g), torch.randint(0, 4, (4, 10), generator=g)
    p_t = F.softmax(torch.randn(10, 4, generator=g), 1)
    out = {}
    for use_vmap, chunk in ((True, 0), (True, 3), (False, 0)):
        model.zero_grad()
        hp = _hp(second_order=second_order, meta_batching="vmap" if use_vmap else "loop", meta_chunk=chunk)
        loss = meta_loss(model, model(x), x, labels, p_t, hp)
        loss.backward()
        out[(use_vmap, chunk)] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    ref_loss, ref_grads = out[(False, 0)]
    for loss, grads in out.values():
        assert torch.allclose(loss, ref_loss, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, ref_grads))


def test_consistency_is_kldivloss_element_mean():
    g = torch.Generator().manual_seed(7)
    logits, p = torch.randn(2, 6, 5, generator=g), F.softmax(torch.randn(6, 5, generator=g), 1)
    ref = torch.stack([F.kl_div(F.log_softmax(z, 1), p, reduction="sum") / p.numel() for z in logits])
    assert torch.allclose(consistency(logits, p), ref, atol=1e-7)


# -- schedule and teacher -----------------------------------------------------------------------------
def test_meta_schedule_ramps_alpha_and_switches_the_ema_decay():
    hp = _hp(start_iter=10, mid_iter=30, alpha=2.0)
    assert meta_schedule(10, hp) == (False, 0.0, 0.99)
    active, alpha, eps = meta_schedule(20, hp)
    assert active and alpha == pytest.approx(2.0 * math.exp(-5 * 0.25)) and eps == 0.99
    assert meta_schedule(30, hp)[1:] == (pytest.approx(2.0), 0.99)
    assert meta_schedule(31, hp) == (True, 2.0, 0.999)


def _method(**kw):
    g = torch.Generator().manual_seed(8)
    n, c = 40, 4
    train = TrainSet(x=torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8),
                     y=torch.randint(0, c, (n,), generator=g))

    class _Aug:
        def __call__(self, x, gen):
            return x.float() / 255

    hp = dataclasses.replace(_hp(), **{"batch_size": 10, "epochs": 3, "pretrain_epochs": 1, "start_iter": 1,
                                       "mid_iter": 3, **kw})
    ctx = MethodContext(train=train, num_classes=c, image_shape=(1, 4, 4), device=torch.device("cpu"), seed=0,
                        augmenter=_Aug())
    torch.manual_seed(0)
    return MLNT(hp, ctx)


def test_teacher_is_an_ema_of_the_student_from_its_first_meta_step():
    m = _method()
    m.train_epoch(0)  # CE phase: no teacher yet
    assert not m.teacher_ready
    m._start_round(0)
    expected = None
    steps = 0
    for idx in m.ctx.batches(10):
        steps += 1
        student = [p.detach().clone() for p in m.model.parameters()]
        active, _, eps = meta_schedule(m.round_step, m.hp)
        m._step(idx, meta=True)
        if active:  # updated from the pre-step student: copy first, then θ_t ← eps·θ_t + (1 − eps)·θ
            expected = student if expected is None else [eps * t + (1 - eps) * s for t, s in zip(expected, student)]
        assert m.teacher_ready == (expected is not None)
    assert expected is not None and steps >= 4
    for t, e in zip(m.teacher.model.parameters(), expected):
        assert torch.allclose(t, e, atol=1e-6)


def test_rounds_restart_the_student_and_take_the_previous_teacher_as_pretrain_net():
    m = _method(rounds=2, epochs=5)
    assert [m.stage_of(e) for e in range(5)] == [(-1, 0), (0, 0), (0, 1), (1, 0), (1, 1)]
    for e in range(3):
        m.train_epoch(e)
    teacher = copy.deepcopy(m.teacher.model.state_dict())
    m.train_epoch(3)
    assert m.stage == 1 and all(torch.equal(v, m.pretrain_net.state_dict()[k]) for k, v in teacher.items())
    assert m.round_step == len(list(m.ctx.batches(10)))  # the ramp restarted with the round


# -- configuration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("hp, needle", [({"perturb_ratio": 0.0}, "perturb_ratio"),
                                         ({"perturb_ratio": 1.5}, "perturb_ratio"),
                                         ({"num_fast": 0}, "num_fast")])
def test_bad_hyperparameters_are_one_line_errors_at_resolve_time(hp, needle):
    with pytest.raises(LnlError, match=needle) as err:
        resolve(TrialConfig(method="mlnt", dataset="digits", rate=0.5, hparams=hp))
    assert "\n" not in str(err.value)


class Plain(nn.Module):
    """A backbone without forward_features."""

    def forward(self, x):
        return x


def plain(num_classes: int, in_channels: int = 3, image_size: int = 32) -> Plain:
    return Plain()


def test_a_backbone_without_forward_features_is_an_error_at_resolve_time():
    MODELS.register("plain_no_features", plain)
    try:
        with pytest.raises(LnlError, match="forward_features") as err:
            resolve(TrialConfig(method="mlnt", dataset="digits", rate=0.5, hparams={"model": "plain_no_features"}))
        assert "\n" not in str(err.value)
    finally:
        MODELS.unregister("plain_no_features")


def test_reconstructed_recipes_are_marked_per_preset():
    assert MLNT.recipe_reconstructed("paper", "cifar10") and MLNT.recipe_reconstructed("paper", "cifar100")
    assert not MLNT.recipe_reconstructed("paper", "clothing1m")


# -- a trial through the meta phase -------------------------------------------------------------------
def _cfg(tmp_path, out, **hp):
    return TrialConfig(method="mlnt", dataset="digits", noise="symmetric", rate=0.5, seed=3, epochs=3, subset=16,
                       preset="mini", hparams={**MLNT.SMOKE, "batch_size": 32, **hp}, out_dir=str(tmp_path / out))


def test_trial_reaches_the_meta_phase_and_resumes_across_it(tmp_path):
    a = run_trial(_cfg(tmp_path, "a"), raise_on_error=True)
    hist = a["history"]
    assert [r["phase"] for r in hist] == ["pretrain", "mlnt", "mlnt"]
    assert all(math.isfinite(r["consistency"]) and r["meta_fraction"] > 0 for r in hist[1:])
    assert 0.0 < hist[-1]["flipped"] <= 0.5

    def stop(epoch, rec, ckpt):
        if epoch == 1:
            raise RuntimeError("stop")
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    run_trial(_cfg(tmp_path, "c"), on_epoch_end=stop)
    c = run_trial(_cfg(tmp_path, "c"), raise_on_error=True)
    assert strip(c["history"]) == strip(hist)


def test_second_order_loop_and_rounds_run(tmp_path):
    r = run_trial(_cfg(tmp_path, "so", second_order=True, meta_batching="vmap", rounds=2), raise_on_error=True)
    assert [h["round"] for h in r["history"]] == [-1, 0, 1]


def test_only_the_reconstructed_recipes_are_flagged():
    """CIFAR recipes are the benchmark's reconstruction (flagged in result.json and tables); Clothing1M's is
    main.py's own (not flagged)."""
    from lnlbench.config import TrialConfig, resolve
    from lnlbench.engine import _method_flags

    def flags(dataset, **kw):
        return _method_flags(resolve(TrialConfig(method="mlnt", dataset=dataset, **kw)))
    assert flags("cifar10", noise="symmetric", rate=0.5)["reconstructed"] is True
    assert "MLNT issues #11, #13" in flags("cifar100", noise="symmetric", rate=0.5)["reconstruction"]
    c1m = flags("clothing1m", noise="given", data_options={"max_train": "all"})
    assert c1m == {"uses_clean_data": False, "uses_true_transition": False, "reconstructed": False, "reconstruction": ""}
