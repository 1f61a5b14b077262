"""Mixup: mixed targets and the official loss λ·CE(y_a) + (1 − λ)·CE(y_b); λ ~ Beta(α, α) from ctx.rng."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

import lnlbench.methods.mixup as mixup_module
from lnlbench.components import mixup, sample_lambda, soft_cross_entropy
from lnlbench.contract import MethodContext, TrainSet
from lnlbench.methods.mixup import Mixup, MixupHparams


def test_soft_ce_on_mixed_targets_equals_the_official_mixup_criterion():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    xm, tm, lam, perm = mixup(x, F.one_hot(y, 4).float(), 1.0, np.random.default_rng(0), g)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(tm, lam * F.one_hot(y, 4).float() + (1 - lam) * F.one_hot(y[perm], 4).float())
    logits = torch.randn(8, 4, generator=g)
    official = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    torch.testing.assert_close(soft_cross_entropy(logits, tm), official)


def test_lambda_is_beta_alpha_alpha():
    for alpha in (1.0, 0.2, 8.0):
        rng = np.random.default_rng(0)
        lams = np.array([sample_lambda(rng, alpha) for _ in range(4000)])
        assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 1e-3, alpha
    assert sample_lambda(np.random.default_rng(0), 0.0) == 1.0  # α ≤ 0: no mixing


class _Plain:
    def __call__(self, x, generator=None):
        return self.normalize(x)

    def normalize(self, x):
        return x.float() / 255.0


def test_method_mixes_each_batch_with_one_lambda_from_ctx_rng(monkeypatch):
    g = torch.Generator().manual_seed(0)
    n, bs, seed = 40, 16, 7
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    ctx = MethodContext(train=TrainSet(x=x, y=y), num_classes=10, image_shape=(1, 8, 8),
                        device=torch.device("cpu"), seed=seed, augmenter=_Plain())
    calls = []

    def spy(xb, targets, alpha, rng, generator):
        out = mixup(xb, targets, alpha, rng, generator)
        calls.append((xb, targets, *out))
        return out
    monkeypatch.setattr(mixup_module, "mixup", spy)
    method = Mixup(MixupHparams(model="mlp", epochs=1, batch_size=bs, alpha=0.4), ctx)
    logs = method.train_epoch(0)
    assert len(calls) == 3 and torch.isfinite(logs["loss"])  # 40 samples: batches 16, 16, 8
    # λ: one Beta(0.4, 0.4) draw per batch, in order, from the trial's seeded numpy generator
    fresh = np.random.default_rng(np.random.SeedSequence([seed, 0x3E7]))
    assert [c[4] for c in calls] == [float(fresh.beta(0.4, 0.4)) for _ in calls]
    for xb, t, xm, tm, lam, perm in calls:
        assert sorted(perm.tolist()) == list(range(len(xb)))
        torch.testing.assert_close(xm, lam * xb + (1 - lam) * xb[perm])
        torch.testing.assert_close(tm, lam * t + (1 - lam) * t[perm])
        assert torch.equal(t, F.one_hot(t.argmax(1), 10).float())  # unmixed targets: one-hot labels
    # the targets are the noisy labels of the epoch's batches (every sample once)
    seen = torch.cat([c[1].argmax(1) for c in calls])
    assert torch.equal(seen.sort().values, y.sort().values)


def test_paper_preset_drops_lr_after_epochs_100_and_150_like_the_official_loop():
    from lnlbench.hparams import lr_at
    hp = MixupHparams()
    assert (hp.model, hp.epochs, hp.lr, hp.weight_decay, hp.alpha) == ("preact_resnet18", 200, 0.1, 1e-4, 1.0)
    # train.py calls adjust_learning_rate(epoch) after training epoch `epoch`: 0.1 through epoch 100
    assert [lr_at(e, hp) for e in (0, 100, 101, 150, 151, 199)] == \
        [0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1 ** 2, 0.1 * 0.1 ** 2]
