"""Co-teaching+ (Yu, Han, Yao, Niu, Tsang, Sugiyama — "How does Disagreement Help Generalization against Label
Corruption?", ICML 2019, arXiv 1901.04215; official code ``xingruiyu/coteaching_plus``, files ``main.py``,
``loss.py``, ``model.py`` and ``script/*.sh`` read).

Co-teaching (``methods/coteaching.py``) until the init epoch, then "disagreement, then small-loss": per
mini-batch, keep only the samples on which the two networks' predictions DISAGREE; within that set each
network keeps its ``int((1 − R(T))·|D|)`` smallest-loss samples (all of D when that count is 0), and each
network is updated on its PEER's choice. A batch with no disagreement trains both networks on the whole
batch while the official ``step`` (official epoch index × batch index, ``epoch*i`` in ``main.py``) is below
5000, and not at all after. The forget rate τ, its ramp R(T) over T_k = ``num_gradual`` epochs and the Adam
plan are Co-teaching's (shared in ``lnlbench.components.cotrain``); ``forget_rate`` takes the same values.

``loss_on = "softmax"`` (default, as ``loss.py``): in the disagreement phase the cross-entropy is taken of
the networks' softmax *outputs* (``loss_coteaching(outputs, outputs2, ...)`` with ``outputs =
F.softmax(logits)``: a second softmax inside ``F.cross_entropy``); ``"logits"`` takes it of the logits, as
the paper writes it.

``clean_probability()``: per sample, the fraction of the two networks that kept it the last time it was in
a batch (as Co-teaching); in the disagreement phase only disagreement samples can be kept.

Recipes (``PRESETS``, ``main.py`` and the ``script/*.sh`` defaults):
- ``paper`` CIFAR-10: the LeNet-style ``CNN_small`` (``lenet``), Adam lr 0.001, batch 128, n_epoch 200
  (``epochs = 199``, Co-teaching's indexing), lr → 0 linearly and β₁ 0.9 → 0.1 from epoch 80, T_k 10,
  init epoch 20, no augmentation (``ToTensor`` only).
- ``paper`` CIFAR-100: the 6-conv ``CNN`` (``cotplus_cnn``), init epoch 5, the rest as CIFAR-10.
- ``mini``: Co-teaching's ``mini`` recipes (digits: the MLP with crop augmentation, 100 epochs, decay from
  40; CIFAR-10: ``MINI_CIFAR`` with Adam lr 0.001, decay from 10, T_k 5) and the init epoch at the official
  CIFAR-10 fraction (20 of 200): 10 of 100 on digits, 3 of 25 on CIFAR-10.

Deviations:
- As in our Co-teaching: the kept samples' loss is their mean (the official code divides the mean by
  ``num_remember`` again); test accuracy is network 1's (``predict_with="ensemble"`` sums both); inputs are
  normalised; the default forget rate is the generator's flip rate (the official one is the nominal rate,
  ``forget_rate="noise_rate"``); the last incomplete batch is dropped (``drop_last=True``).
- The selection runs on the device without a host sync per batch (the official code loops over the batch
  in numpy); the kept set is the same.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import ensemble_logits, forget_rate_schedule
from lnlbench.components.cotrain import (
    EpochForgetRate,
    adam_plan,
    disagreement_mask,
    forget_rate_mode,
    set_adam_plan,
    small_loss_exchange,
)
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import MINI_CIFAR, Recipe, TrainHparams
from lnlbench.registry import register_method


@dataclass(frozen=True)
class CoteachingPlusHparams(TrainHparams):
    """Co-teaching+'s CIFAR-10 recipe (xingruiyu/coteaching_plus main.py)."""

    model: str = "lenet"
    epochs: int = 199  # official epochs 1..199 of n_epoch = 200
    batch_size: int = 128
    lr: float = 0.001
    weight_decay: float = 0.0
    epoch_decay_start: int = 80  # (official index) lr → 0 linearly from here, Adam β₁ 0.9 → beta1_decayed
    beta1_decayed: float = 0.1
    forget_rate: str | float = "flip_rate"  # "flip_rate" | "noise_rate" (nominal) | "estimate" | a number
    num_gradual: int = 10  # T_k
    exponent: float = 1.0  # c
    init_epoch: int = 20  # (official index) the disagreement phase starts here: 20 CIFAR-10, 5 CIFAR-100
    fallback_steps: int = 5000  # a batch without disagreement trains on all while epoch·batch < this
    loss_on: str = "softmax"  # softmax (loss.py: CE of the softmax outputs) | logits
    predict_with: str = "net1"  # net1 (official report) | ensemble


_CIFAR = Recipe({"model": "lenet", "epochs": 199, "batch_size": 128, "lr": 0.001, "epoch_decay_start": 80,
                 "num_gradual": 10, "init_epoch": 20}, protocol=dict(augment=False))
PRESETS = {
    "paper": {"cifar10": _CIFAR, "cifar100": _CIFAR.with_hparams(model="cotplus_cnn", init_epoch=5)},
    "mini": {
        "digits": Recipe({"model": "mlp", "epochs": 100, "batch_size": 64, "lr": 0.001,
                          "epoch_decay_start": 40, "num_gradual": 10, "init_epoch": 10},
                         protocol=dict(augment=True)),
        "cifar10": MINI_CIFAR.with_hparams(lr=0.001, weight_decay=0.0, epoch_decay_start=10, num_gradual=5,
                                           init_epoch=3),
    },
}


def in_disagreement_phase(epoch: int, init_epoch: int) -> bool:
    """Whether our 0-based ``epoch`` is past the switch: the official loop runs plain Co-teaching while its
    epoch index (ours + 1) is below ``init_epoch``."""
    return epoch + 1 >= init_epoch


def disagreement_exchange(ce1: torch.Tensor, ce2: torch.Tensor, disagree: torch.Tensor, rate: float,
                          fallback: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Co-teaching+'s update on one batch: (loss1, loss2, keep1, keep2).

    Within the disagreement set D each network keeps its ``int((1 − rate)·|D|)`` smallest losses (all of D
    when that is 0) and learns from its peer's; without disagreement, both learn from the whole batch if
    ``fallback`` (else zero losses, no sample kept). No host sync: |D| stays on the device."""
    n = ce1.shape[0]
    n_dis = disagree.sum()
    k = torch.floor((1.0 - rate) * n_dis.float()).long()
    k = torch.where(k == 0, n_dis, k)
    inf = torch.tensor(float("inf"), device=ce1.device)

    def keep(ce: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(torch.where(disagree, ce.detach(), inf))
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(n, device=ce.device))
        return disagree & (rank < k)

    keep1, keep2 = keep(ce1), keep(ce2)
    count = k.clamp_min(1).float()
    loss1, loss2 = (ce1 * keep2).sum() / count, (ce2 * keep1).sum() / count
    none = n_dis == 0
    scale = float(fallback)
    loss1 = torch.where(none, ce1.mean() * scale, loss1)
    loss2 = torch.where(none, ce2.mean() * scale, loss2)
    everyone = torch.full_like(disagree, fallback)
    return loss1, loss2, torch.where(none, everyone, keep1), torch.where(none, everyone, keep2)


@register_method("coteaching_plus")
class CoteachingPlus(EpochForgetRate, Method):
    """Co-teaching, then the small-loss exchange on the two networks' disagreement set (Yu et al. 2019)."""

    display_name = "Co-teaching+"

    Hparams = CoteachingPlusHparams
    PRESETS = PRESETS
    STATE_ATTRS = ("kept", "last_loss", "tau_estimate")
    SMOKE = {"num_gradual": 3, "epoch_decay_start": 2, "init_epoch": 2}  # Co-teaching (R = τ/2) in epoch 0
    COMPUTE_FLOOR = ComputeFloor(train=1)  # each net's own step: 2 forward+backward per batch
    SEARCH_SPACE = {"init_epoch": ("randint", 1, 40), "num_gradual": ("randint", 1, 20)}
    selection_threshold = 0.25  # kept by at least one of the two networks

    def __init__(self, hp: CoteachingPlusHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.mode, self.tau_fixed = forget_rate_mode(hp.forget_rate, ctx.noise_rate_hint, ctx.flip_rate_hint,
                                                     "coteaching_plus")
        if hp.loss_on not in ("softmax", "logits") or hp.predict_with not in ("net1", "ensemble"):
            raise LnlError(f"coteaching_plus: loss_on must be softmax|logits and predict_with net1|ensemble, "
                           f"got {hp.loss_on!r}, {hp.predict_with!r}")
        self.net1 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.net2 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.optimizer1, self.optimizer2 = (torch.optim.Adam(n.parameters(), lr=hp.lr,
                                                             weight_decay=hp.weight_decay)
                                            for n in (self.net1, self.net2))
        n = len(ctx.train)
        self.kept = torch.ones(n, device=ctx.device)
        self.last_loss = torch.full((n,), float("nan"), device=ctx.device)
        self.tau_estimate = 0.0


    def train_epoch(self, epoch: int) -> dict:
        ctx, hp = self.ctx, self.hp
        tau = self._tau(epoch)
        rate = forget_rate_schedule(epoch + 1, tau, hp.num_gradual, hp.exponent)
        lr, beta1 = adam_plan(epoch, hp.lr, hp.epochs, hp.epoch_decay_start, hp.beta1_decayed)
        set_adam_plan((self.optimizer1, self.optimizer2), lr, beta1)
        plus = in_disagreement_phase(epoch, hp.init_epoch)
        self.net1.train()
        self.net2.train()
        sums = torch.zeros(3, device=ctx.device)  # loss1, loss2, disagreement fraction
        steps = 0
        for i, idx in enumerate(ctx.batches(hp.batch_size, drop_last=True)):
            x, y = ctx.augment(ctx.train.x[idx]), ctx.train.y[idx]
            with ctx.autocast():
                logits1, logits2 = self.net1(x).float(), self.net2(x).float()
            ce1 = F.cross_entropy(logits1, y, reduction="none")
            ce2 = F.cross_entropy(logits2, y, reduction="none")
            disagree = disagreement_mask(logits1.detach(), logits2.detach())
            if plus:
                t1, t2 = ce1, ce2
                if hp.loss_on == "softmax":  # loss.py: CE of the softmax outputs
                    t1 = F.cross_entropy(logits1.softmax(1), y, reduction="none")
                    t2 = F.cross_entropy(logits2.softmax(1), y, reduction="none")
                fallback = (epoch + 1) * i < hp.fallback_steps  # main.py passes step = epoch * i
                loss1, loss2, keep1, keep2 = disagreement_exchange(t1, t2, disagree, rate, fallback)
            else:
                loss1, loss2, keep1, keep2 = small_loss_exchange(ce1, ce2, rate)
            ctx.step(loss1, self.optimizer1)
            ctx.step(loss2, self.optimizer2)
            self.kept[idx] = (keep1.float() + keep2.float()) / 2
            self.last_loss[idx] = (ce1.detach() + ce2.detach()) / 2
            ctx.sync_rows(self.kept, idx)
            ctx.sync_rows(self.last_loss, idx)
            sums += torch.stack([loss1.detach(), loss2.detach(), disagree.float().mean()])
            steps += 1
        mean = sums / max(1, steps)
        return {"loss": mean[0], "loss2": mean[1], "disagreement": mean[2], "forget_rate": rate, "tau": tau,
                "tau_source": self.mode, "phase": "coteaching+" if plus else "coteaching"}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.hp.predict_with == "ensemble":
            return ensemble_logits([self.net1, self.net2], x)
        self.net1.eval()
        return self.net1(x)

    def clean_probability(self) -> torch.Tensor:
        return self.kept

    def current_lr(self) -> float:
        return float(self.optimizer1.param_groups[0]["lr"])
