"""MOIT / MOIT+: the interpolated contrastive loss, the cross-batch memory, kNN detection, median balancing,
the complex augmentation, and MOIT+'s stage (clean samples only, re-initialised classifier, boundary)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lnlbench.components.augment import ComplexAugment
from lnlbench.components.knn import knn_detect, knn_neighbours, median_balanced_selection
from lnlbench.components.projection import CrossBatchMemory, ProjectionNet
from lnlbench.config import TrialConfig
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.datasets.augment import Augmenter
from lnlbench.engine import run_trial
from lnlbench.errors import LnlError
from lnlbench.methods.moit import detection_score, icl_loss, moit_classification_loss
from lnlbench.methods.moit_plus import MOITPlus, MOITPlusHparams, mix_boot_loss


def _batch_icl(e1, e2, y, p1, p2, l1, l2, tau):
    b = len(y)
    ids = torch.arange(b).repeat(2)
    lam = torch.cat([torch.full((b,), l1), torch.full((b,), l2)])
    perm, y2 = torch.cat([p1, p2]), torch.cat([y, y])
    emb = torch.cat([e1, e2])
    return icl_loss(emb, emb, lam, ids, perm, y2, y[perm], ids, y2, torch.arange(2 * b), tau)


def _official_icl(emb, keys, y, key_labels, p1, p2, l1, l2, tau, cur=None):
    """The official mask construction (utils_noise.py), written out; ``cur`` = the batch's key columns."""
    b = len(y)
    eye2 = torch.eye(2 * b)
    sup_b = ((y[:, None] == y[None]).float() - torch.eye(b)).repeat(2, 2) * (1 - eye2)
    uns_b = torch.eye(b).repeat(2, 2) * (1 - eye2)
    q = lambda lab: torch.cat([torch.cat([(lab[p][:, None] == lab[None]).float()] * 2, 1) for p in (p1, p2)])
    sup2_b = q(y) * (1 - eye2)
    uns2_b = q(torch.arange(b)) * (1 - eye2)
    if keys is None:
        masks, lmask, logits = (sup_b, uns_b, sup2_b, uns2_b), 1 - eye2, emb @ emb.t() / tau
    else:
        k = len(key_labels)
        sup = (y[:, None] == key_labels[None]).float().repeat(2, 1)
        sup2 = torch.cat([(y[p][:, None] == key_labels[None]).float() for p in (p1, p2)])
        uns, uns2, lmask = torch.zeros(2 * b, k), torch.zeros(2 * b, k), torch.ones(2 * b, k)
        for full, part in ((sup, sup_b), (uns, uns_b), (sup2, sup2_b), (uns2, uns2_b), (lmask, 1 - eye2)):
            full[:, cur] = part
        masks, logits = (sup, uns, sup2, uns2), emb @ keys.t() / tau
    sup, uns, sup2, uns2 = masks
    log_prob = logits - torch.log((torch.exp(logits) * lmask).sum(1, keepdim=True))
    t1 = ((sup + uns) * log_prob).sum(1) / (sup.sum(1) + uns.sum(1))
    t2 = ((sup2 + uns2) * log_prob).sum(1) / (sup2.sum(1) + uns2.sum(1))
    lam = torch.cat([torch.full((b,), l1), torch.full((b,), l2)])
    return -(lam * t1 + (1 - lam) * t2).mean()


# -- interpolated contrastive loss -----------------------------------------------------------------
def test_icl_hand_worked_four_samples():
    # two samples × two views; views of a sample coincide, the samples are orthogonal; τ = 1.
    e1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    loss = _batch_icl(e1, e1.clone(), y, torch.tensor([1, 0]), torch.tensor([0, 1]), 0.75, 0.6, tau=1.0)
    # anchors of view 1 (partner = the other sample): log(2 + e) − λ₁; of view 2 (partner = itself): log(2 + e) − 1
    expected = math.log(2 + math.e) - (0.75 + 1.0) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_icl_equals_official_masks_on_batch_and_memory():
    g = torch.Generator().manual_seed(0)
    b, c = 6, 3
    e1, e2 = (F.normalize(torch.randn(b, 4, generator=g), dim=1) for _ in range(2))
    y = torch.randint(0, c, (b,), generator=g)
    p1, p2 = torch.randperm(b, generator=g), torch.randperm(b, generator=g)
    ours = _batch_icl(e1, e2, y, p1, p2, 0.7, 0.9, 0.1)
    ref = _official_icl(torch.cat([e1, e2]), None, y, None, p1, p2, 0.7, 0.9, 0.1)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    # memory: 8 older rows, then this batch written at columns 3..15 of 20
    mem = CrossBatchMemory(20, 4, torch.device("cpu"))
    mem.enqueue(F.normalize(torch.randn(3, 4, generator=g), dim=1), torch.randint(0, c, (3,), generator=g))
    emb, y2 = torch.cat([e1, e2]), torch.cat([y, y])
    mem.enqueue(emb, y2)
    feats, labels = mem.get()
    ids, sl = torch.arange(b).repeat(2), mem.last_slice
    key_ids = torch.full((len(labels),), -1)
    key_ids[sl] = ids
    lam = torch.cat([torch.full((b,), 0.7), torch.full((b,), 0.9)])
    perm = torch.cat([p1, p2])
    ours = icl_loss(emb, feats, lam, ids, perm, y2, y[perm], key_ids, labels, torch.arange(sl.start, sl.stop), 0.1)
    ref = _official_icl(emb, feats, y, labels, p1, p2, 0.7, 0.9, 0.1, torch.arange(sl.start, sl.stop))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_icl_symmetric_in_the_pair_of_views():
    g = torch.Generator().manual_seed(1)
    e1, e2 = (F.normalize(torch.randn(5, 3, generator=g), dim=1) for _ in range(2))
    y = torch.tensor([0, 1, 1, 2, 0])
    p1, p2 = torch.randperm(5, generator=g), torch.randperm(5, generator=g)
    a = _batch_icl(e1, e2, y, p1, p2, 0.8, 0.55, 0.1)
    b = _batch_icl(e2, e1, y, p2, p1, 0.55, 0.8, 0.1)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


# -- classification losses -------------------------------------------------------------------------
def test_classification_loss_clean_batch_is_mixup_ce_and_noisy_rows_use_soft_labels():
    g = torch.Generator().manual_seed(2)
    logits, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2])
    perm, lam = torch.tensor([1, 2, 0, 0, 2, 1]), torch.tensor([0.7] * 3 + [0.6] * 3)
    p = F.softmax(torch.randn(3, 4, generator=g), 1)
    plain = moit_classification_loss(logits, y, perm, lam, None, p)
    assert moit_classification_loss(logits, y, perm, lam, torch.ones(3), p).item() == pytest.approx(plain.item())
    # all noisy: only the soft-label terms, λ·H(z_i) + (1 − λ)·H(z_π(i))
    logp = F.log_softmax(logits, 1)
    z1 = torch.cat([p, p])
    want = (lam * -(z1 * logp).sum(1)).mean() + ((1 - lam) * -(p[perm] * logp).sum(1)).mean()
    got = moit_classification_loss(logits, y, perm, lam, torch.zeros(3), p)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_mix_boot_loss_weights():
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    perm, z = torch.tensor([1, 0, 3, 2]), torch.tensor([2, 2, 1, 1])
    plain = mix_boot_loss(logits, y, perm, 0.7, None, 0.2)
    assert mix_boot_loss(logits, y, perm, 0.7, y, 0.2).item() == pytest.approx(plain.item(), rel=1e-6)
    only_z = mix_boot_loss(logits, z, perm, 0.7, None, 0.2)
    assert mix_boot_loss(logits, y, perm, 0.7, z, 0.2).item() == pytest.approx(
        0.8 * plain.item() + 0.2 * only_z.item(), rel=1e-6)


# -- cross-batch memory ----------------------------------------------------------------------------
def test_memory_fifo_order_and_labels():
    mem = CrossBatchMemory(6, 1, torch.device("cpu"))
    put = lambda labels: mem.enqueue(torch.tensor(labels, dtype=torch.float32)[:, None], torch.tensor(labels))
    put([0, 1])
    feats, labels = mem.get()
    assert labels.tolist() == [0, 1] and feats[:, 0].tolist() == [0.0, 1.0] and mem.last_slice == slice(0, 2)
    put([2, 3])
    put([4, 5])
    assert mem.get()[1].tolist() == [0, 1, 2, 3, 4, 5] and mem.full
    put([6, 7])  # would run past the end: written over the LAST rows, ptr back to 0
    assert mem.get()[1].tolist() == [0, 1, 2, 3, 6, 7] and mem.ptr == 0 and mem.last_slice == slice(4, 6)
    put([8, 9])
    feats, labels = mem.get()
    assert labels.tolist() == [8, 9, 2, 3, 6, 7] and feats[:, 0].tolist() == [8, 9, 2, 3, 6, 7]
    other = CrossBatchMemory(6, 1, torch.device("cpu"))
    other.load_state_dict(mem.state_dict())
    assert other.get()[1].tolist() == labels.tolist() and other.ptr == mem.ptr and other.last_slice == mem.last_slice
    with pytest.raises(LnlError, match="cannot hold a batch"):
        put(list(range(7)))


# -- kNN detection and median balancing ------------------------------------------------------------
def _clusters():
    """3 tight clusters of 10 on the unit circle; samples 0, 10, 20 carry another cluster's label."""
    g = torch.Generator().manual_seed(0)
    true = torch.arange(3).repeat_interleave(10)
    ang = true.float() * (2 * math.pi / 3) + 0.05 * torch.randn(30, generator=g)
    feats = torch.stack([ang.cos(), ang.sin()], 1)
    noisy = true.clone()
    noisy[[0, 10, 20]] = torch.tensor([1, 2, 0])
    return feats, true, noisy


@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_detection_finds_the_flipped_labels(exclude_self):
    feats, true, noisy = _clusters()
    det = knn_detect(feats, noisy, 3, k=5, exclude_self=exclude_self)
    assert torch.equal(det["corrected"], true)
    assert det["clean"].tolist() == (noisy == true).tolist()
    assert torch.allclose(det["q"][[0, 10, 20]], torch.zeros(3))
    # chunked similarities give the same neighbours as one block
    assert torch.equal(knn_neighbours(feats, 5, exclude_self, max_elems=31), knn_neighbours(feats, 5, exclude_self))


def test_knn_self_vote_with_and_without_self():
    feats, _, noisy = _clusters()
    with_self = knn_detect(feats, noisy, 3, k=1, exclude_self=False)
    assert with_self["agree"].all() and torch.equal(with_self["corrected"], noisy)  # its own label wins
    nbr = knn_neighbours(feats, 1, exclude_self=True)
    assert (nbr[:, 0] != torch.arange(30)).all()
    without = knn_detect(feats, noisy, 3, k=1, exclude_self=True)
    assert torch.equal(without["corrected"][[0, 10, 20]], torch.tensor([0, 1, 2]))  # the nearest other's label


def test_median_balanced_selection():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    agree = torch.tensor([1, 1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool)  # per class 3, 1, 2 → median 2
    disc = torch.tensor([0.5, 0.1, 0.9, 0.2, 3.0, 2.0, 0.3, 0.1, 0.2])
    clean = median_balanced_selection(agree, disc, labels, 3)
    assert clean.tolist() == [False, True, False, True, True, True, False, True, True]
    # an even number of classes: the lower middle count (torch.median), 2 of counts 1, 2, 3, 4
    labels = torch.arange(4).repeat_interleave(4)
    agree = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1], dtype=torch.bool)
    clean = median_balanced_selection(agree, torch.arange(16.0), labels, 4)
    assert clean.view(4, 4).sum(1).tolist() == [2, 2, 2, 2]
    assert clean.view(4, 4)[:, :2].all()


def test_detection_score_thresholds_exactly_at_the_detection():
    clean = torch.tensor([1.0, 1.0, 0.0, 0.0])
    score = detection_score(clean, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert ((score > 0.5) == clean.bool()).all()


# -- complex augmentation --------------------------------------------------------------------------
def test_complex_augment_geometry_and_randomness():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    geo = ComplexAugment(p_jitter=0.0, p_gray=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    out = geo(x, g)  # whole-image crop: each output is the image or its mirror
    xf = x.float()
    same = (out - xf).abs().amax((1, 2, 3)) < 1e-3
    mirrored = (out - xf.flip(-1)).abs().amax((1, 2, 3)) < 1e-3
    assert (same | mirrored).all() and same.any() and mirrored.any()
    full = ComplexAugment()
    a = full(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, full(x, torch.Generator().manual_seed(5)))
    assert a.shape == (16, 3, 8, 8) and a.min() >= 0 and a.max() <= 255
    twins = full(x[:1].repeat(8, 1, 1, 1), g)
    assert len({tuple(t.flatten()[:20].tolist()) for t in twins}) > 1  # a draw per sample
    gray = ComplexAugment(p_gray=1.0)(x, g)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    with pytest.raises(LnlError, match="augmentation=simple"):
        full(x[:, :1])


# -- MOIT+ -----------------------------------------------------------------------------------------
def _plus_method(n_per_class: int = 8, classes: int = 3) -> MOITPlus:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.randint(0, 256, (len(y), 1, 8, 8), dtype=torch.uint8, generator=g)
    aug = Augmenter.build((0.5,), (0.25,), 1, False, "cpu")
    ctx = MethodContext(train=TrainSet(x=x, y=y), num_classes=classes, image_shape=(1, 8, 8),
                        device=torch.device("cpu"), seed=0, augmenter=aug)
    hp = MOITPlusHparams(model="mlp", model_kwargs={"hidden": [16]}, epochs=3, moit_epochs=1, batch_size=8,
                         k_val=3, xbm_per_class=3, xbm_begin=0, start_correction=0, plus_boot_start=0,
                         augmentation="simple", schedule="constant", lr=0.05)
    torch.manual_seed(0)
    return MOITPlus(hp, ctx)


def test_moit_plus_reinitialises_the_classifier_and_trains_only_on_clean_samples():
    m = _plus_method()
    m.train_epoch(0)  # one MOIT epoch, with its detection
    clean = torch.zeros(len(m.ctx.train))
    clean[[0, 3, 5, 9, 12, 17, 20, 22]] = 1.0
    m.clean.copy_(clean)
    x = m.ctx.train.x
    x[clean.bool()] = 0  # clean images black, the rest white: any white input would be a leak
    x[~clean.bool()] = 255
    body = {k: v.clone() for k, v in m.model.backbone.body.state_dict().items()}
    head = m.model.classifier.weight.detach().clone()
    m.start_plus()
    assert torch.equal(m.pool, torch.nonzero(clean).squeeze(1))
    assert not torch.equal(m.model.classifier.weight, head)  # re-initialised ...
    bound = 1 / math.sqrt(m.model.classifier.in_features)  # ... with nn.Linear's default init
    assert m.model.classifier.weight.abs().max() <= bound
    assert all(torch.equal(v, body[k]) for k, v in m.model.backbone.body.state_dict().items())
    seen = []
    forward = m.model.forward
    m.model.forward = lambda inp: (seen.append(inp.detach().clone()), forward(inp))[1]
    logs = m.train_epoch(1)
    black = m.ctx.normalize(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    assert sum(len(s) for s in seen) == 2 * 8  # the mixed view and the plain view of each clean sample
    assert all(torch.allclose(s, black.expand_as(s)) for s in seen)
    assert logs["stage"] == "moit+" and logs["plus_samples"] == 8


def test_moit_plus_stage_boundary_in_a_trial(tmp_path):
    cfg = TrialConfig(method="moit_plus", dataset="digits", noise="symmetric", rate=0.5, seed=1, epochs=4,
                      subset=16, preset="mini", out_dir=str(tmp_path),
                      hparams={"moit_epochs": 2, "batch_size": 32, "start_correction": 1, "xbm_begin": 1,
                               "plus_boot_start": 1})
    r = run_trial(cfg)
    assert r["status"] == "ok", r["error"]
    h = r["history"]
    assert [e["stage"] for e in h] == ["moit", "moit", "moit+", "moit+"]
    assert [e["phase"] for e in h] == ["mixup-ce", "ssl", "mixup-ce", "boot"]
    assert h[2]["lr"] == pytest.approx(0.005) and h[0]["lr"] == pytest.approx(0.05)
    assert "contrastive_loss" in h[1] and "contrastive_loss" not in h[2]
    assert h[2]["plus_samples"] == round(h[1]["detected_clean"] * 160)
    assert all(e["selection"]["precision"] is not None for e in h)  # the detection is scored every epoch


def test_projection_net_needs_features():
    with pytest.raises(LnlError, match="forward_features"):
        ProjectionNet(torch.nn.Linear(3, 2), 4, "moit")


def test_moit_memory_must_hold_a_batch():
    m = _plus_method()
    hp = MOITPlusHparams(model="mlp", batch_size=64, xbm_per_class=2)
    with pytest.raises(LnlError, match="xbm_per_class"):
        MOITPlus(hp, m.ctx)


def test_ctx_augments_follows_the_protocol():
    mk = lambda aug: MethodContext(train=TrainSet(x=torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                                                  y=torch.zeros(2, dtype=torch.long)),
                                   num_classes=2, image_shape=(3, 4, 4), device=torch.device("cpu"), seed=0,
                                   augmenter=aug)
    assert not mk(Augmenter.build((0.5,) * 3, (0.2,) * 3, 0, False, "cpu")).augments
    assert mk(Augmenter.build((0.5,) * 3, (0.2,) * 3, 4, True, "cpu")).augments


def test_moit_plus_moit_stage_is_moit(tmp_path):
    """Before the boundary, moit_plus is exactly moit (same draws, same networks): one MOIT cell suffices."""
    def run(method, **hp):
        cfg = TrialConfig(method=method, dataset="digits", noise="symmetric", rate=0.5, seed=2, epochs=2, subset=16,
                          preset="mini", out_dir=str(tmp_path / method), hparams={"batch_size": 32, **hp})
        return [(e["test_acc"], e["contrastive_loss"], e["selection"]["auc"]) for e in run_trial(cfg)["history"]]
    assert run("moit") == run("moit_plus", moit_epochs=5)
