"""APL: NCE, NFL, NGCE, RCE and MAE by hand, the normalisation property, the pairs and the recipes."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lnlbench.contract import MethodContext, TrainSet
from lnlbench.errors import LnlError
from lnlbench.methods.apl import (
    APL,
    PAIRS,
    APLHparams,
    apl_loss,
    mae,
    normalized_ce,
    normalized_focal,
    normalized_gce,
    reverse_ce,
)

# logits (0, ln 3) → p = (0.25, 0.75), label 1
LOGITS = torch.tensor([[0.0, math.log(3.0)]])
Y = torch.tensor([1])


def test_nce_and_rce_by_hand():
    # NCE = −ln 0.75 / (−ln 0.25 − ln 0.75) = 0.287682 / 1.673976; RCE = −ln(1e-4) × 0.25 = 9.210340 × 0.25
    assert normalized_ce(LOGITS, Y).item() == pytest.approx(0.287682 / 1.673976, abs=1e-6)
    assert normalized_ce(LOGITS, Y).item() == pytest.approx(0.171856, abs=1e-6)
    assert reverse_ce(LOGITS, Y).item() == pytest.approx(2.302585, abs=1e-5)
    assert mae(LOGITS, Y).item() == pytest.approx(0.25, abs=1e-7)


def test_nfl_and_ngce_by_hand():
    # NFL γ = 0.5: FL_1 = 0.25^0.5 × 0.287682 = 0.143841, FL_0 = 0.75^0.5 × 1.386294 = 1.200566
    nfl = normalized_focal(LOGITS, Y, 0.5).item()
    assert nfl == pytest.approx(0.143841 / (0.143841 + 1.200566), abs=1e-5)
    # NGCE q = 0.5: (1 − 0.75^0.5) / (2 − 0.25^0.5 − 0.75^0.5) = 0.133975 / 0.633975
    assert normalized_gce(LOGITS, Y, 0.5).item() == pytest.approx(0.133975 / 0.633975, abs=1e-5)


@pytest.mark.parametrize("loss", [lambda z, y: normalized_ce(z, y), lambda z, y: normalized_focal(z, y, 0.5),
                                  lambda z, y: normalized_gce(z, y, 0.7)])
def test_normalised_losses_sum_to_one_over_the_labels(loss):
    # the property behind the robustness theorem: Σ_k L_norm(p, k) = 1 for every prediction p
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 5, generator=g)
    total = sum(loss(z, torch.full((8,), k)) for k in range(5))
    torch.testing.assert_close(total, torch.ones(8), rtol=1e-5, atol=1e-5)


def test_pair_combines_alpha_active_and_beta_passive():
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
    hp = APLHparams(alpha=10.0, beta=0.1)
    loss, active, passive = apl_loss(z, y, hp)
    torch.testing.assert_close(active, normalized_ce(z, y).mean())
    torch.testing.assert_close(passive, reverse_ce(z, y).mean())
    torch.testing.assert_close(loss, 10.0 * active + 0.1 * passive)
    _, a2, p2 = apl_loss(z, y, dataclasses.replace(hp, loss="nfl+mae"))
    torch.testing.assert_close(a2, normalized_focal(z, y, 0.5).mean())
    torch.testing.assert_close(p2, mae(z, y).mean())
    assert set(PAIRS) == {"nce+rce", "nce+mae", "nfl+rce", "nfl+mae", "ngce+rce", "ngce+mae"}


class _Plain:
    def __call__(self, x, generator=None):
        return self.normalize(x)

    def normalize(self, x):
        return x.float() / 255.0


def _ctx() -> MethodContext:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=g)
    return MethodContext(train=TrainSet(x=x, y=torch.randint(0, 10, (32,), generator=g)), num_classes=10,
                         image_shape=(1, 8, 8), device=torch.device("cpu"), seed=0, augmenter=_Plain())


def test_unknown_pair_is_a_one_line_error_naming_the_pairs():
    with pytest.raises(LnlError, match="nce\\+rce"):
        APL(APLHparams(model="mlp", loss="nce+xyz"), _ctx())


def test_every_pair_trains_with_the_clip():
    for pair in PAIRS:
        torch.manual_seed(0)
        method = APL(APLHparams(model="mlp", epochs=1, batch_size=32, lr=0.01, loss=pair, grad_bound=1e-3),
                     _ctx())
        logs = method.train_epoch(0)
        assert math.isfinite(float(logs["loss"])) and logs["grad_norm"] > 0


def test_presets_follow_the_official_configs():
    hp = APLHparams()
    assert (hp.model, hp.epochs, hp.lr, hp.weight_decay, hp.schedule, hp.grad_bound) == \
        ("sce_cnn", 120, 0.01, 1e-4, "cosine", 5.0)
    assert (hp.loss, hp.alpha, hp.beta) == ("nce+rce", 1.0, 1.0)
    c100 = dataclasses.replace(hp, **APL.PRESETS["paper"]["cifar100"])
    assert (c100.model, c100.epochs, c100.lr, c100.weight_decay, c100.alpha, c100.beta, c100.q) == \
        ("resnet50", 200, 0.1, 1e-5, 10.0, 0.1, 0.7)
    mini = APL.PRESETS["mini"]
    assert (mini["digits"]["alpha"], mini["digits"]["beta"], mini["digits"]["lr"]) == (10.0, 0.1, 0.05)
    assert mini["cifar10"].hparams["model"] == "cnn_small" and mini["cifar10"].hparams["beta"] == 0.1
