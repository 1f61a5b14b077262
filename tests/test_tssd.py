"""TSSD: the feature stream's similarity, the two streams' agreement, the meta classifier (golden data only),
and the method's distilled / certain sets as the harness scores them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnlbench.components.division import class_mean_similarity, feature_clean_probability, parallel_division
from lnlbench.components.metaclf import fit_meta_classifier, golden_negatives, meta_features
from lnlbench.config import TrialConfig
from lnlbench.engine import build_trial
from lnlbench.methods import tssd as tssd_mod
from lnlbench.registry import METHODS


def test_class_mean_similarity_is_the_row_mean_of_each_class_similarity_matrix():
    g = torch.Generator().manual_seed(0)
    feats, y = torch.randn(40, 7, generator=g), torch.randint(0, 3, (40,), generator=g)
    y[0], y[1] = 2, 2  # no empty class
    got = class_mean_similarity(feats, y, 4)
    u = F.normalize(feats, dim=1)
    for i in range(40):
        same = (y == y[i]).nonzero().view(-1)
        others = same[same != i]
        assert got[i] == pytest.approx((u[others] @ u[i]).mean().item(), abs=1e-5)
    lone = class_mean_similarity(feats[:1], torch.tensor([1]), 4)
    assert lone.tolist() == [0.0]


def test_feature_stream_finds_the_samples_outside_their_class_cluster():
    g = torch.Generator().manual_seed(1)
    centre = torch.zeros(8)
    centre[0] = 1.0
    core = centre + 0.05 * torch.randn(30, 8, generator=g)
    strays = torch.randn(10, 8, generator=g)  # mislabelled: features of other classes, label 0
    feats, y = torch.cat([core, strays]), torch.zeros(40, dtype=torch.long)
    seeds = iter(range(100))
    w = feature_clean_probability(class_mean_similarity(feats, y, 2), y, 2, lambda: next(seeds))
    assert (w[:30] > 0.5).all() and (w[30:] < 0.5).all()


def test_parallel_division_is_the_agreement_of_both_streams():
    w_loss = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.55, 0.45, 0.6])
    w_feat = torch.tensor([0.8, 0.2, 0.1, 0.7, 0.52, 0.3, 0.45])
    clean, noisy, uncertain = parallel_division(w_loss, w_feat, 0.5)
    assert clean.tolist() == [True, False, False, False, True, False, False]
    assert noisy.tolist() == [False, False, True, False, False, True, False]
    assert uncertain.tolist() == [False, True, False, True, False, False, True]
    c6, n6, _ = parallel_division(w_loss, w_feat, 0.6)  # a stricter agreement (τ_c = 0.6 at 90 % noise)
    assert c6.tolist() == [True, False, False, False, False, False, False]
    assert n6.tolist() == [False, False, True, False, False, False, False]


def test_meta_classifier_separates_clean_from_flipped_pairs():
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 5, (200,), generator=g)
    logits = 4.0 * F.one_hot(y, 5).float() + torch.randn(200, 5, generator=g)  # a net that fits the truth
    labels = torch.cat([y, golden_negatives(logits, y, g)])
    assert (labels[200:] != y.repeat(2)).all()  # the negatives are wrong labels
    sim = torch.where(labels == y.repeat(3), 0.8, 0.3)
    x = meta_features(logits.repeat(3, 1), labels, sim, (torch.tensor(0.0), torch.tensor(8.0)))
    assert x.shape == (600, 6) and torch.isfinite(x).all()
    target = torch.cat([torch.ones(200), torch.zeros(400)])
    clf = fit_meta_classifier(x, target, torch.Generator().manual_seed(0))
    acc = ((clf.score(x) > 0.5).float() == target).float().mean()
    assert acc > 0.95
    again = fit_meta_classifier(x, target, torch.Generator().manual_seed(0))
    assert torch.equal(again.score(x), clf.score(x))  # seeded: reproducible


def _trial(tmp_path, **kw):
    cls = METHODS.get("tssd")
    cfg = TrialConfig(method="tssd", dataset="digits", noise="symmetric", rate=0.5, seed=0, epochs=2,
                      subset=30, preset="mini", hparams={**cls.SMOKE, "batch_size": 32, **kw},
                      out_dir=str(tmp_path / "r"))
    return build_trial(cfg)


def test_the_meta_classifier_is_fitted_on_golden_data_only(tmp_path, monkeypatch):
    trial = _trial(tmp_path)
    method, golden = trial.method, trial.ctx.golden
    seen = []
    real = tssd_mod.fit_meta_classifier

    def spy(x, target, generator, *args):  # the k-th fit is net k's, before either net trains this epoch
        net = (method.net1, method.net2)[len(seen)].eval()
        logits, _ = tssd_mod.logits_and_features(net, golden.x, trial.ctx.normalize, trial.ctx.autocast)
        seen.append((x.clone(), target.clone(), F.softmax(logits, 1)))
        return real(x, target, generator, *args)

    monkeypatch.setattr(tssd_mod, "fit_meta_classifier", spy)
    method.train_epoch(0)
    logs = method.train_epoch(1)
    assert len(seen) == 2  # one fit per net
    n_g = len(golden)
    for x, target, p in seen:
        assert x.shape[0] == 3 * n_g and target.sum().item() == n_g  # G true (clean), G × 2 flipped (noisy)
        assert target[:n_g].all() and not target[n_g:].any()
        # the rows are G's own: the net's outputs on the golden images alone, under their true labels and then
        # under the two wrong ones (p(label) of a true row, max p of every row)
        assert torch.allclose(x[:n_g, 1], p.gather(1, golden.y.view(-1, 1)).view(-1), atol=1e-5)
        assert torch.allclose(x[:, 2], p.max(1).values.repeat(3), atol=1e-5)
    assert logs["mined"] >= 0 and logs["certain_clean"] > 0


def test_tssd_division_sets_and_what_the_harness_scores(tmp_path):
    trial = _trial(tmp_path)
    m = trial.method
    assert m.clean_probability() is None and m.selection_sets() == {}
    m.train_epoch(0)
    m.train_epoch(1)
    d, n = m.division, len(trial.ctx.train)
    assert d["certain"].shape == (n,) and not (d["certain"] & d["noisy"]).any()
    assert not (d["mined"] & (d["certain"] | d["noisy"])).any()  # mined only from the uncertain set
    golden = torch.arange(n, n + len(trial.ctx.golden))
    assert torch.isin(golden, d["lab"]).all() and not torch.isin(golden, d["unl"]).any()
    assert set(d["lab"].tolist()).isdisjoint(d["unl"].tolist())
    assert sorted(d["lab"][d["lab"] < n].tolist() + d["unl"].tolist()) == list(range(n))
    distilled = (m.clean_probability() > 0.5)
    assert torch.equal(distilled, d["certain"] | d["mined"])
    rec = trial.epoch_record(1, {}, 0.0)
    assert set(rec["selection_sets"]) == {"certain", "mined"}
    certain = rec["selection_sets"]["certain"]
    assert certain["selected_fraction"] == pytest.approx(d["certain"].float().mean().item())
    assert np.isfinite(rec["selection"]["precision"])


def test_golden_class_similarity_and_the_per_class_normalisation():
    g = torch.Generator().manual_seed(3)
    ref, ref_y = torch.randn(20, 4, generator=g), torch.arange(20) % 2
    q, qy = torch.randn(3, 4, generator=g), torch.tensor([0, 1, 1])
    got = tssd_mod.class_similarity(q, qy, ref, ref_y, 3)
    r, u = F.normalize(ref, dim=1), F.normalize(q, dim=1)
    for i in range(3):
        assert got[i] == pytest.approx((r[ref_y == qy[i]] @ u[i]).mean().item(), abs=1e-5)
    ref_v = torch.tensor([0.0, 10.0, 2.0, 4.0])
    ref_c = torch.tensor([0, 0, 1, 1])
    v, vy = torch.tensor([5.0, 3.0, 7.0]), torch.tensor([0, 1, 2])  # class 2 has no reference: 0.5
    assert tssd_mod.class_minmax(v, vy, ref_v, ref_c, 3).tolist() == [0.5, 0.5, 0.5]
    assert tssd_mod.class_minmax(torch.tensor([10.0, 2.0]), torch.tensor([0, 1]), ref_v, ref_c, 3).tolist() == [
        1.0, 0.0]
