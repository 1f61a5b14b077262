"""What is unique to PES: the layer-wise early-stopping schedule (which parameters train when), the confident
selection with its class weights, and PES (semi)'s MixMatch batch split and class-weighted Lx."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lnlbench.components.layerwise import fix_, renew_, renewed_modules, stages, train_only_
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.errors import LnlError
from lnlbench.hparams import build_hparams, preset_overrides
from lnlbench.methods import pes
from lnlbench.registry import MODELS


def _method(cls=pes.PES, n: int = 64, **hp) -> pes.PES:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = (torch.randint(0, 100, (n, 1, 8, 8), generator=g) + 50 * y.view(-1, 1, 1, 1)).to(torch.uint8)  # learnable
    train = TrainSet(x=x, y=y)
    ctx = MethodContext(train=train, num_classes=4, image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0,
                        augmenter=Augmenter.build((0.5,), (0.25,), 1, False, "cpu"))
    torch.manual_seed(0)
    hp = {"model": "mlp", "model_kwargs": {"hidden": (16, 16)}, "batch_size": 16, "lr": 0.1,
          "schedule": "constant", "t1": 1, "t2": 1, "t3": 1, "pes_lr": 1e-2, **hp}
    return cls(build_hparams(cls.Hparams, hp), ctx)


def _snap(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before))


# -- the layer-wise components ---------------------------------------------------------------------------
def test_stages_of_the_registered_models():
    r18 = MODELS.get("resnet18")(10, width=8)
    assert stages(r18) == [r18.layer1, r18.layer2, r18.layer3, r18.layer4]
    small = MODELS.get("cnn_small")(10)
    assert stages(small) == list(small.stages) and len(stages(small)) == 3
    mlp = MODELS.get("mlp")(10, in_channels=1, image_size=8)
    assert stages(mlp) == [mlp.body[0], mlp.body[2]]  # the hidden Linear layers, not the ReLUs
    assert renewed_modules(r18, 1) == [r18.layer4, r18.head] and renewed_modules(r18, 0) == [r18.head]
    assert renewed_modules(r18, 3) == [r18.layer2, r18.layer3, r18.layer4, r18.head]  # renew_layers(3)
    with pytest.raises(LnlError, match="stages"):
        stages(torch.nn.Linear(3, 3))
    with pytest.raises(LnlError, match="last 5 stages"):
        renewed_modules(r18, 5)


def test_renew_copies_the_fresh_weights_and_batchnorm_statistics_of_the_last_stages_and_head():
    torch.manual_seed(0)
    model, fresh = MODELS.get("cnn_small")(10), MODELS.get("cnn_small")(10)
    model.stages[2].bn1.running_mean.fill_(3.0)  # statistics a trained model has moved
    first = _snap(model.stages[0])
    renewed = renew_(model, fresh, 1)
    assert renewed == [model.stages[2], model.head]
    for mine, new in ((model.stages[2], fresh.stages[2]), (model.head, fresh.head)):
        for (k, a), (_, b) in zip(mine.state_dict().items(), new.state_dict().items()):
            assert torch.equal(a, b), k
    assert not _changed(model.stages[0], first)  # earlier stages keep their weights
    assert model.stages[2].bn1.running_mean.abs().sum() == 0


def test_train_only_and_fix_choose_the_parameters_that_get_gradients():
    mlp = MODELS.get("mlp")(4, in_channels=1, image_size=8)
    train_only_(mlp, [mlp.head])
    assert [p.requires_grad for p in mlp.parameters()] == [False, False, False, False, True, True]
    fix_(mlp, renewed_modules(mlp, 1))
    assert [p.requires_grad for p in mlp.parameters()] == [True, True, False, False, False, False]


# -- the schedule -----------------------------------------------------------------------------------------
def test_layerwise_schedule_which_parameters_train_when():
    m = _method()
    first, last, head = m.model.body[0], m.model.body[2], m.model.head
    snaps = {k: _snap(v) for k, v in (("first", first), ("last", last), ("head", head))}
    assert m.train_epoch(0)["phase"] == "ce"  # epoch < t1: every layer trains
    assert all(_changed(mod, snaps[k]) for k, mod in (("first", first), ("last", last), ("head", head)))
    snaps = {k: _snap(v) for k, v in (("first", first), ("last", last), ("head", head))}
    assert m.train_epoch(1)["phase"] == "refine"  # epoch t1: the earlier layers are fixed
    assert not _changed(first, snaps["first"]) and _changed(last, snaps["last"]) and _changed(head, snaps["head"])
    assert m.clean_probability() is None
    snaps = {k: _snap(v) for k, v in (("first", first), ("last", last), ("head", head))}
    rec = m.train_epoch(2)  # after: SGD trains the layers before the renewed ones (the official optimiser)
    assert rec["phase"] == "confident" and 0 < float(rec["confident_fraction"]) <= 1
    assert _changed(first, snaps["first"]) and not _changed(last, snaps["last"])
    assert not _changed(head, snaps["head"])
    assert torch.equal(m.clean_probability(), m.confident)


def test_refinement_stages_t2_renews_the_last_stage_and_head_t3_the_head_alone():
    for t2, t3, moved in ((1, 0, {"last", "head"}), (0, 1, {"head"})):
        m = _method(t2=t2, t3=t3)
        m.train_epoch(0)
        mods = {"first": m.model.body[0], "last": m.model.body[2], "head": m.model.head}
        snaps = {k: _snap(v) for k, v in mods.items()}
        m.refine()
        assert {k for k, v in mods.items() if _changed(v, snaps[k])} == moved
        assert m.fixed_stages == (1 if t2 else 0)
        assert {k for k, v in mods.items() if not next(v.parameters()).requires_grad} == moved


def test_train_renewed_lets_sgd_train_every_layer_after_the_refinement():
    m = _method(train_renewed=True)
    m.train_epoch(0)
    m.train_epoch(1)
    before = _snap(m.model.head)
    m.train_epoch(2)
    assert _changed(m.model.head, before)


def test_checkpoint_restores_which_layers_are_fixed():
    m = _method()
    for e in range(2):
        m.train_epoch(e)
    state = m.state_dict()
    m2 = _method()
    assert all(p.requires_grad for p in m2.model.parameters())
    m2.load_state_dict(state)
    assert [p.requires_grad for p in m2.model.parameters()] == [p.requires_grad for p in m.model.parameters()]
    assert m2.fixed_stages == 1


# -- the selection ----------------------------------------------------------------------------------------
def test_confident_means_prediction_agrees_with_the_noisy_label():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.4, 0.35, 0.25]])
    assert pes.confident_mask(probs, torch.tensor([0, 2, 2, 1])).tolist() == [True, False, True, False]


def test_two_view_softmax_averages_two_augmented_views_in_eval_mode():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    x = torch.randn(5, 1, 2, 2)
    views = iter([x, -x])
    got = pes.two_view_softmax(net, x, lambda b: next(views))
    assert not net.training
    want = (F.softmax(net(x), 1) + F.softmax(net(-x), 1)) / 2
    assert torch.allclose(got, want)


def test_class_weights_mean_over_nonempty_classes_divided_by_count():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 3])  # counts 4, 2, 0, 1; mean of the non-zero counts 7/3
    assert torch.allclose(pes.class_weights(y, 4), torch.tensor([7 / 12, 7 / 6, 0.0, 7 / 3]))
    assert torch.allclose(pes.class_weights(y, 4, cap=2.0), torch.tensor([7 / 12, 7 / 6, 0.0, 2.0]))


def test_weighted_ce_on_the_confident_set_only():
    m = _method()
    m.train_epoch(0)
    m.train_epoch(1)
    seen = []
    real = m.model.forward
    m.model.forward = lambda x: (seen.append(len(x)), real(x))[1]
    m.train_epoch(2)
    n_conf = int(m.confident.sum())
    # the selection pass (2 views of 64) then full batches of 16 drawn from the confident samples only
    assert seen[:2] == [64, 64] and sum(seen[2:]) == n_conf - n_conf % 16


# -- PES (semi) -------------------------------------------------------------------------------------------
def test_semi_batch_split():
    assert pes.semi_batch_sizes(100, 300, 128) == (64, 64)  # more unconfident: half the batch each
    assert pes.semi_batch_sizes(300, 100, 128) == (96, 32)  # else the unconfident share of B
    assert pes.semi_batch_sizes(10, 0, 128) == (128, 0)


def test_class_weighted_lx_is_the_official_per_class_sum():
    logits, t = torch.randn(6, 4), torch.softmax(torch.randn(6, 4), 1)
    w = torch.tensor([0.5, 1.0, 2.0, 3.0])
    official = torch.sum(-torch.mean(F.log_softmax(logits, 1) * t, 0) * w)
    from lnlbench.components import soft_cross_entropy
    assert torch.allclose(soft_cross_entropy(logits, t * w), official)


def test_semi_refines_the_head_then_trains_mixmatch_with_the_head_fixed():
    m = _method(pes.PESSemi, t2=0, t3=1, lambda_u=25.0)
    assert m.train_epoch(0)["phase"] == "ce"
    body, head = _snap(m.model.body), _snap(m.model.head)
    rec = m.train_epoch(1)  # epoch t1: head refinement, then the first MixMatch epoch
    assert rec["phase"] == "mixmatch" and "refine_loss" in rec and float(rec["lx"]) > 0
    assert _changed(m.model.body, body) and _changed(m.model.head, head)
    head = _snap(m.model.head)
    m.train_epoch(2)
    assert not _changed(m.model.head, head)  # the renewed head stays as the refinement left it
    assert m.fixed_stages == 0


def test_semi_alpha_drops_at_half_the_epochs(monkeypatch):
    m = _method(pes.PESSemi, epochs=4, t2=0, t3=1)
    m.train_epoch(0)
    seen = []
    real = pes.mixmatch
    monkeypatch.setattr(pes, "mixmatch", lambda *a: (seen.append(a[2]), real(*a))[1])
    m.train_epoch(1)
    m.train_epoch(2)
    steps = 64 // 16
    assert seen == [4.0] * steps + [0.75] * steps


def test_presets():
    semi = pes.PESSemi.PRESETS
    assert preset_overrides(semi, "paper", "cifar10", "instance", 0.4)["lambda_u"] == 15.0
    assert preset_overrides(semi, "paper", "cifar100", "pairflip", 0.45)["lambda_u"] == 50.0
    n = preset_overrides(semi, "paper", "cifar10", "cifar10n", None)
    assert n["model"] == "resnet34" and n["lambda_u"] == 5.0
    assert preset_overrides(semi, "paper", "cifar100", "cifar100n", None)["lambda_u"] == 75.0
    c100 = preset_overrides(pes.PES.PRESETS, "paper", "cifar100", "symmetric", 0.5)
    assert c100["model"] == "resnet34" and c100["t1"] == 30 and c100["milestones"] == (100, 150)


def test_semi_steps_mix_the_labeled_and_unlabeled_rows_of_the_split(monkeypatch):
    m = _method(pes.PESSemi, t2=0, t3=1)
    m.train_epoch(0)
    rows = []
    real = pes.mixmatch
    monkeypatch.setattr(pes, "mixmatch", lambda inputs, *a: (rows.append(len(inputs[0])), real(inputs, *a))[1])
    m.train_epoch(1)
    n_lab = int(m.confident.sum())
    nl, nu = pes.semi_batch_sizes(n_lab, 64 - n_lab, 16)
    assert rows == [2 * nl + 2 * nu] * (64 // 16)  # N // B steps of both views of each row
