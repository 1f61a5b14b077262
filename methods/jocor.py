"""JoCoR (Wei, Feng, Chen, An — "Combating Noisy Labels by Agreement: A Joint Training Method with
Co-Regularization", CVPR 2020; official code ``hongxin001/JoCoR``, files ``main.py``, ``algorithm/jocor.py``,
``algorithm/loss.py``, ``model/cnn.py`` and ``README.md`` read).

Two networks see the same mini-batch; per sample the JOINT loss

    ℓ = (1 − λ)·(CE(p₁, y) + CE(p₂, y)) + λ·(KL(p₂‖p₁) + KL(p₁‖p₂))

(supervised part plus a symmetric-KL co-regularisation pulling the networks together; gradients reach both
networks through both KL terms, as ``kl_loss_compute`` leaves its target attached). The batch keeps its
``int((1 − R(T))·B)`` samples with the smallest joint loss and ONE Adam optimiser over both networks'
parameters steps on their mean. R(T), the forget rate τ and the Adam plan are Co-teaching's
(``methods/coteaching.py``, shared in ``lnlbench.components.cotrain``; ``forget_rate`` takes the same values).

``clean_probability()``: per sample, 1 if the joint small-loss selection kept it the last time it was in a
batch, else 0 (1 before any selection).

Recipes (``PRESETS``):
- ``paper`` CIFAR-10: the 6-conv ``CNN`` of ``model/cnn.py`` (``cotplus_cnn``, the same network as
  Co-teaching+'s CIFAR-100 one), Adam lr 0.001, batch 128, n_epoch 200 (``epochs = 199``: the loop trains
  epochs 1…199 and indexes the plans by them), lr → 0 and β₁ 0.9 → 0.1 from epoch 80, T_k 10, c 1, no
  augmentation (``ToTensor`` only); λ = 0.9, the README's best for CIFAR-10 at 20 %, 50 % and asymmetric 40 %
  (its 80 % best is 0.65: ``--hp co_lambda=0.65``; the code's default 0.1 is not a reported setting).
- ``paper`` CIFAR-100: the same with decay from epoch 100 and λ = 0.85 (README).
- ``mini``: Co-teaching's ``mini`` recipes (digits: the MLP with crop augmentation, 100 epochs, decay from
  40; CIFAR-10: ``MINI_CIFAR`` with Adam lr 0.001, no weight decay, decay from 10, T_k 5) with λ = 0.9.

Deviations:
- The forget rate defaults to the generator's flip rate, as our Co-teaching; the official τ is the nominal
  rate, halved for its asymmetric noise (``jocor.py``), which on its own noise is that flip rate.
- ``num_iter_per_epoch`` (400) is not applied: at batch 128 a CIFAR epoch has 390 batches, so it never cuts.
- Inputs are normalised (the official code feeds [0, 1] pixels; the README notes normalisation may move
  the best λ). Test accuracy is network 1's (the official script reports both; ``predict_with="ensemble"``
  sums them). The last incomplete batch is dropped, as the official loader does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import ensemble_logits, forget_rate_schedule, small_loss_mask
from lnlbench.components.cotrain import EpochForgetRate, adam_plan, forget_rate_mode, set_adam_plan
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import MINI_CIFAR, Recipe, TrainHparams
from lnlbench.registry import register_method


@dataclass(frozen=True)
class JoCoRHparams(TrainHparams):
    """JoCoR's CIFAR-10 recipe (hongxin001/JoCoR main.py, README's λ)."""

    model: str = "cotplus_cnn"
    epochs: int = 199  # official epochs 1..199 of n_epoch = 200
    batch_size: int = 128
    lr: float = 0.001
    weight_decay: float = 0.0
    epoch_decay_start: int = 80  # (official index) lr → 0 linearly from here, Adam β₁ 0.9 → beta1_decayed
    beta1_decayed: float = 0.1
    forget_rate: str | float = "flip_rate"  # "flip_rate" | "noise_rate" (nominal) | "estimate" | a number
    num_gradual: int = 10  # T_k
    exponent: float = 1.0  # c
    co_lambda: float = 0.9  # λ: weight of the symmetric-KL co-regularisation
    predict_with: str = "net1"  # net1 | ensemble


_CIFAR = Recipe({"model": "cotplus_cnn", "epochs": 199, "batch_size": 128, "lr": 0.001,
                 "epoch_decay_start": 80, "num_gradual": 10, "co_lambda": 0.9}, protocol=dict(augment=False))
PRESETS = {
    "paper": {"cifar10": _CIFAR, "cifar100": _CIFAR.with_hparams(epoch_decay_start=100, co_lambda=0.85)},
    "mini": {
        "digits": Recipe({"model": "mlp", "epochs": 100, "batch_size": 64, "lr": 0.001,
                          "epoch_decay_start": 40, "num_gradual": 10, "co_lambda": 0.9},
                         protocol=dict(augment=True)),
        "cifar10": MINI_CIFAR.with_hparams(lr=0.001, weight_decay=0.0, epoch_decay_start=10, num_gradual=5,
                                           co_lambda=0.9),
    },
}


def symmetric_kl(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p₂‖p₁) + KL(p₁‖p₂) of two networks' softmax outputs (``kl_loss_compute`` both ways)."""
    logp1, logp2 = F.log_softmax(logits1.float(), dim=1), F.log_softmax(logits2.float(), dim=1)
    return ((logp2.exp() * (logp2 - logp1)).sum(dim=1) + (logp1.exp() * (logp1 - logp2)).sum(dim=1))


def joint_loss(logits1: torch.Tensor, logits2: torch.Tensor, y: torch.Tensor,
               co_lambda: float) -> torch.Tensor:
    """Per-sample JoCoR loss (1 − λ)·(CE₁ + CE₂) + λ·(KL(p₂‖p₁) + KL(p₁‖p₂)) (``loss_jocor``'s loss_pick)."""
    ce = F.cross_entropy(logits1.float(), y, reduction="none") + F.cross_entropy(logits2.float(), y,
                                                                                 reduction="none")
    return (1.0 - co_lambda) * ce + co_lambda * symmetric_kl(logits1, logits2)


def small_joint_loss(joint: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean joint loss over the kept samples, kept mask): the ``int((1 − rate)·B)`` smallest joint losses."""
    keep = small_loss_mask(joint.detach(), 1.0 - rate)
    return (joint * keep).sum() / max(1, int((1.0 - rate) * joint.shape[0])), keep


@register_method("jocor")
class JoCoR(EpochForgetRate, Method):
    """Two networks trained jointly on their small-joint-loss samples, co-regularised to agree (JoCoR)."""

    display_name = "JoCoR"

    Hparams = JoCoRHparams
    PRESETS = PRESETS
    STATE_ATTRS = ("kept", "last_loss", "tau_estimate")
    SMOKE = {"num_gradual": 3, "epoch_decay_start": 2}  # R = τ/2 in epoch 0, then τ; Adam's decay from 1
    COMPUTE_FLOOR = ComputeFloor(train=2)  # both nets forward+backward in one joint step
    SEARCH_SPACE = {"co_lambda": ("uniform", 0.5, 0.95), "num_gradual": ("randint", 1, 20)}

    def __init__(self, hp: JoCoRHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.mode, self.tau_fixed = forget_rate_mode(hp.forget_rate, ctx.noise_rate_hint, ctx.flip_rate_hint,
                                                     "jocor")
        if not 0.0 <= hp.co_lambda <= 1.0 or hp.predict_with not in ("net1", "ensemble"):
            raise LnlError(f"jocor: co_lambda must be in [0, 1] and predict_with net1|ensemble, got "
                           f"{hp.co_lambda!r}, {hp.predict_with!r}")
        self.net1 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.net2 = ctx.make_model(hp.model, **hp.model_kwargs)
        params = list(self.net1.parameters()) + list(self.net2.parameters())
        self.optimizer = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)  # one for both nets
        n = len(ctx.train)
        self.kept = torch.ones(n, device=ctx.device)
        self.last_loss = torch.full((n,), float("nan"), device=ctx.device)
        self.tau_estimate = 0.0


    def train_epoch(self, epoch: int) -> dict:
        ctx, hp = self.ctx, self.hp
        tau = self._tau(epoch)
        rate = forget_rate_schedule(epoch + 1, tau, hp.num_gradual, hp.exponent)
        lr, beta1 = adam_plan(epoch, hp.lr, hp.epochs, hp.epoch_decay_start, hp.beta1_decayed)
        set_adam_plan((self.optimizer,), lr, beta1)
        self.net1.train()
        self.net2.train()
        sums = torch.zeros(2, device=ctx.device)  # loss, co-regularisation (batch mean)
        steps = 0
        for idx in ctx.batches(hp.batch_size, drop_last=True):
            x, y = ctx.augment(ctx.train.x[idx]), ctx.train.y[idx]
            with ctx.autocast():
                logits1, logits2 = self.net1(x), self.net2(x)
            joint = joint_loss(logits1, logits2, y, hp.co_lambda)
            loss, keep = small_joint_loss(joint, rate)
            ctx.step(loss, self.optimizer)
            self.kept[idx] = keep.float()
            self.last_loss[idx] = joint.detach()
            ctx.sync_rows(self.kept, idx)
            ctx.sync_rows(self.last_loss, idx)
            sums += torch.stack([loss.detach(), symmetric_kl(logits1.detach(), logits2.detach()).mean()])
            steps += 1
        mean = sums / max(1, steps)
        return {"loss": mean[0], "co_reg": mean[1], "forget_rate": rate, "tau": tau, "tau_source": self.mode}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.hp.predict_with == "ensemble":
            return ensemble_logits([self.net1, self.net2], x)
        self.net1.eval()
        return self.net1(x)

    def clean_probability(self) -> torch.Tensor:
        return self.kept
