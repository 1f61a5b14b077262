"""Bootstrap: soft and hard targets and losses by hand, β per the paper, the entropy reading of soft mode."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lnlbench.config import TrialConfig, resolve
from lnlbench.errors import LnlError
from lnlbench.methods.bootstrap import bootstrap_beta, bootstrap_loss, bootstrap_target

# logits (0, ln 3) → q = (0.25, 0.75); the noisy label is class 0
LOGITS = torch.tensor([[0.0, math.log(3.0)]])
Y = torch.tensor([0])


def test_targets_by_hand():
    # soft β = 0.95: 0.95·(1, 0) + 0.05·(0.25, 0.75) = (0.9625, 0.0375)
    torch.testing.assert_close(bootstrap_target(LOGITS, Y, 0.95, "soft"), torch.tensor([[0.9625, 0.0375]]))
    # hard β = 0.8: argmax q = 1 → 0.8·(1, 0) + 0.2·(0, 1) = (0.8, 0.2)
    torch.testing.assert_close(bootstrap_target(LOGITS, Y, 0.8, "hard"), torch.tensor([[0.8, 0.2]]))


def test_losses_by_hand():
    l0, l1 = math.log(0.25), math.log(0.75)
    soft = bootstrap_loss(LOGITS, Y, 0.95, "soft")
    assert soft.item() == pytest.approx(-(0.9625 * l0 + 0.0375 * l1), abs=1e-6)
    hard = bootstrap_loss(LOGITS, Y, 0.8, "hard")
    assert hard.item() == pytest.approx(-(0.8 * l0 + 0.2 * l1), abs=1e-6)
    assert bootstrap_loss(LOGITS, Y, 1.0, "soft").item() == pytest.approx(F.cross_entropy(LOGITS, Y).item())


def test_soft_is_ce_plus_entropy_and_its_gradient_flows_through_q():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    q = F.softmax(logits, 1)
    entropy = -(q * F.log_softmax(logits, 1)).sum(1).mean()
    want = 0.95 * F.cross_entropy(logits, y) + 0.05 * entropy
    got = bootstrap_loss(logits, y, 0.95, "soft")
    torch.testing.assert_close(got, want)
    g_paper, = torch.autograd.grad(got, logits)
    g_want, = torch.autograd.grad(want, logits)
    torch.testing.assert_close(g_paper, g_want)
    g_detached, = torch.autograd.grad(bootstrap_loss(logits, y, 0.95, "soft", detach_target=True), logits)
    assert not torch.allclose(g_detached, g_paper)  # vfdev-5's pseudo-label variant differs


def test_beta_defaults_per_mode_and_unknown_mode_is_one_line(tmp_path):
    assert bootstrap_beta("soft", None) == 0.95 and bootstrap_beta("hard", None) == 0.8
    assert bootstrap_beta("hard", 0.6) == 0.6
    with pytest.raises(LnlError, match="soft or hard") as err:
        resolve(TrialConfig(method="bootstrap", hparams={"mode": "medium"}, rate=0.4, out_dir=str(tmp_path)))
    assert "\n" not in str(err.value)
    with pytest.raises(LnlError, match="beta"):
        resolve(TrialConfig(method="bootstrap", hparams={"beta": 1.5}, rate=0.4, out_dir=str(tmp_path)))
