"""ELR+: early-learning regularisation with two networks, weight averaging and mixup (Liu et al.,
"Early-Learning Regularization Prevents Memorization of Noisy Labels", NeurIPS 2020; official code
``github.com/shengliu66/ELR``, files ``ELR_plus/model/loss.py`` (``elr_plus_loss``),
``ELR_plus/trainer/trainer.py``, ``ELR_plus/base/base_trainer.py``, ``ELR_plus/train.py``,
``ELR_plus/utils/util.py`` and ``ELR_plus/config_*.json`` read).

Each epoch (the official single-GPU path) trains network 1 for a whole epoch, then network 2, each with
its own shuffle. For network k, per batch of augmented images x with one-hot labels y:

    x̃, ỹ = mixup(x, y) with λ ~ Beta(α, α), λ ← max(λ, 1 − λ), one permutation π
    p̄ = softmax(EMA_other(x))                       the PEER's weight-averaged copy, on the un-mixed x
    t_k[i] ← β·t_k[i] + (1 − β)·p̄_i                  temporal ensemble of the peer's EMA outputs
    q = λ·t_k[idx] + (1 − λ)·t_k[idx][π]               targets mixed like the inputs
    L = CE_soft(f_k(x̃), ỹ) + w(s)·λ_ELR · mean log(1 − ⟨q, clamp(softmax(f_k(x̃)), 1e-4, 1 − 1e-4)⟩)
    EMA_k ← d(s)·EMA_k + (1 − d(s))·f_k

with w(s) = sigmoid_rampup(s, coef_step) (1 when coef_step = 0) and, with ``ema_update``,
d(s) = sigmoid_rampup(s + 1, ema_step)·ema_alpha, else min(1 − 1/(s + 1), ema_alpha); s is the global step,
which advances by network 1's number of steps after both networks have trained (both use the same s).
On CIFAR-100 (``label_times_target``) the CE's soft label is ỹ ⊙ q, renormalised. The test prediction is
the sum of the two networks' logits (the official 0.5·(f₁ + f₂), same argmax).

Recipes (``PRESETS``), SGD momentum 0.9, mixup α 1, EMA α 0.997 ramped over 40,000 steps:
- ``paper`` CIFAR-10 (``config_cifar10.json``): PreAct ResNet-18 ×2, lr 0.02, weight decay 5e-4, batch 128,
  200 epochs, lr ×0.1 at 150, β 0.7, λ 3, coef_step 0. Asymmetric (``config_cifar10_asym.json``): β 0.9, λ 1.
- ``paper`` CIFAR-100 (``config_cifar100.json``): 250 epochs, lr ×0.1 at 200, β 0.9, λ 7, coef_step 40,000,
  soft label y ⊙ q.
- ``paper`` Clothing1M (``config_clothing1m.json``): ImageNet-pretrained ResNet-50 ×2, lr 0.002, weight
  decay 1e-3, batch 64, 15 epochs, lr ×0.1 at 7, β 0.7, λ 3, EMA α 0.999 with ``ema_update`` false; the
  official loader trains on a fixed class-balanced subset of 3000 × 64 images, here the protocol's
  ``subset`` = 13,714 per class (192,000 / 14) drawn once (``subset_seed``) from the full set (streamed) or
  a pool of at least 192,000 (``train_pool``): under a smaller ``--data-opt max_train`` pool the trial stops
  with an error naming it.
- ``paper`` mini-WebVision (``config_webvision.json``): InceptionResNetV2 ×2 from scratch, batch 32, lr 0.02,
  weight decay 5e-4, 100 epochs, lr ×0.1 at 50, β 0.7, λ 3, EMA α 0.997 with ``ema_update`` false.
  Published: CIFAR-10 S50 94.8, S80 93.3, A40 93.0; CIFAR-100 S50 73.6 [paper, not verified]; Clothing1M
  74.81 [README].
- ``mini`` (CPU scale): CE's ``mini`` optimiser and schedule (digits: MLP, SGD lr 0.05 constant, 100
  epochs; CIFAR-10: ``MINI_CIFAR``, 300 images per class, no augmentation, 25 epochs) with CIFAR-10's β, λ,
  mixup and EMA α; ``ema_step`` is scaled to the run's length as the paper's 40,000 of ~78,000 steps
  (about half: 300 of 600).

Deviations:
- The ELR+ configs name β ``alpha`` in ``train_loss.args`` while ``train.py`` reads ``beta`` (so it must
  be passed ``--beta``); we take the config's value as β (0.7 CIFAR-10 symmetric, 0.9 CIFAR-100).
- Each EMA network starts as a copy of its network; the official code builds it as a separate random
  initialisation. With ``ema_update`` the first decay is ~0.007, so the EMA is the network after one step
  either way. The EMA networks run in train mode (batch-statistics batch norm) when they produce targets,
  as in the official code, whose EMA networks are never put in eval mode.
- WebVision (InceptionResNetV2) has no preset: lnlbench has neither the dataset nor the network. Its
  config (batch 32, lr 0.02, 100 epochs, lr ×0.1 at 50, β 0.7, λ 3, mixup α 1.0, EMA 0.997 without
  ramp) can be given as hyperparameters.
- Multi-GPU training of the two networks in parallel processes (which then see each other's EMA only at
  epoch ends) is not reproduced; the sequential single-GPU order is.
- The official loaders hold out 10 % of CIFAR's training set (45k train); that split is the harness's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import ModelEMA, ensemble_logits, mixup, sigmoid_rampup, soft_cross_entropy
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, Recipe, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method
from lnlbench.search import SGD_SPACE


@dataclass(frozen=True)
class ELRPlusHparams(TrainHparams):
    """ELR+'s recipe (shengliu66/ELR ELR_plus/config_cifar10.json)."""

    model: str = "preact_resnet18"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.02
    weight_decay: float = 5e-4
    schedule: str = "step"
    milestones: tuple[int, ...] = (150,)
    gamma: float = 0.1
    beta: float = 0.7  # target temporal-ensemble momentum
    lam: float = 3.0  # regulariser weight λ
    coef_step: int = 0  # steps of the sigmoid ramp of λ (0: no ramp)
    mixup_alpha: float = 1.0
    ema_alpha: float = 0.997
    ema_update: bool = True  # ramp the EMA decay over ema_step steps; else min(1 − 1/(s+1), ema_alpha)
    ema_step: int = 40000
    label_times_target: bool = False  # CIFAR-100: soft label ỹ ⊙ q for the CE
    clamp: float = 1e-4


def elr_plus_loss(logits: torch.Tensor, mixed_labels: torch.Tensor, q: torch.Tensor, coef: float,
                  label_times_target: bool = False, clamp: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft CE + coef · mean log(1 − ⟨q, p̂⟩), the regulariser) as ELR_plus/model/loss.py computes it."""
    logits = logits.float()
    p = F.softmax(logits, dim=1).clamp(clamp, 1.0 - clamp)
    y = mixed_labels
    if label_times_target:
        y = y * q
        y = y / y.sum(dim=1, keepdim=True)
    reg = torch.log(1.0 - (q * p).sum(dim=1)).mean()
    return soft_cross_entropy(logits, y) + coef * reg, reg.detach()


def ema_decay(step: int, hp: ELRPlusHparams) -> float:
    """The decay of the EMA update after global step ``step`` (trainer.py ``update_ema_variables``)."""
    if hp.ema_update:
        return sigmoid_rampup(step + 1, hp.ema_step) * hp.ema_alpha
    return min(1.0 - 1.0 / (step + 1), hp.ema_alpha)


_CIFAR = {"model": "preact_resnet18", "epochs": 200, "batch_size": 128, "lr": 0.02, "momentum": 0.9,
          "weight_decay": 5e-4, "schedule": "step", "milestones": (150,), "gamma": 0.1, "beta": 0.7,
          "lam": 3.0, "coef_step": 0, "mixup_alpha": 1.0, "ema_alpha": 0.997, "ema_update": True,
          "ema_step": 40000, "label_times_target": False}
PRESETS = {
    "paper": {
        "cifar10": _CIFAR,
        "cifar10/asymmetric": {"beta": 0.9, "lam": 1.0},
        "cifar100": {**_CIFAR, "epochs": 250, "milestones": (200,), "beta": 0.9, "lam": 7.0,
                     "coef_step": 40000, "label_times_target": True},
        "clothing1m": Recipe(
            {"model": "resnet50", "model_kwargs": {"pretrained": True}, "epochs": 15, "batch_size": 64,
             "lr": 0.002, "momentum": 0.9, "weight_decay": 1e-3, "schedule": "step", "milestones": (7,),
             "gamma": 0.1, "beta": 0.7, "lam": 3.0, "coef_step": 0, "mixup_alpha": 1.0, "ema_alpha": 0.999,
             "ema_update": False},
            protocol=dict(subset=13714, train_pool=192000)),  # 3000 batches × 64, 13,714 per class
        # config_webvision.json: InceptionResNetV2 ×2 from scratch on every mini-WebVision image
        "webvision": {"model": "inception_resnet_v2", "model_kwargs": {}, "epochs": 100, "batch_size": 32,
                      "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step", "milestones": (50,),
                      "gamma": 0.1, "beta": 0.7, "lam": 3.0, "coef_step": 0, "mixup_alpha": 1.0,
                      "ema_alpha": 0.997, "ema_update": False, "ema_step": 40000, "label_times_target": False},
    },
    "mini": {
        "digits": DIGITS_MLP | {"beta": 0.7, "lam": 3.0, "ema_step": 1100},
        "cifar10": MINI_CIFAR.with_hparams(beta=0.7, lam=3.0, ema_step=300),
    },
}


@register_method("elr_plus")
class ELRPlus(Method):
    """Two networks with mixup, each regularised towards its peer's weight-averaged early predictions."""

    display_name = "ELR+"

    Hparams = ELRPlusHparams
    PRESETS = PRESETS
    # ELR+ (Liu et al., NeurIPS 2020) appendix: the same β and λ grid as ELR; the mixup α around
    # config_cifar10.json's 1.0 and lr/wd (SGD_SPACE): ours.
    SEARCH_SPACE = {**SGD_SPACE, "beta": ("choice", [0.5, 0.7, 0.9, 0.99]),
                    "lam": ("choice", [1.0, 3.0, 5.0, 7.0, 10.0]), "mixup_alpha": ("choice", [0.5, 1.0, 2.0])}
    STATE_ATTRS = ("targets1", "targets2", "global_step")
    SMOKE = {"ema_step": 4, "coef_step": 0}  # the EMA decay at ema_alpha after 3 steps, λ unramped
    COMPUTE_FLOOR = ComputeFloor(train=1, forward=1)  # the mixed batch trained, the peer's EMA forward

    def __init__(self, hp: ELRPlusHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.net1 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.net2 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.optimizer1 = make_sgd(self.net1.parameters(), hp)
        self.optimizer2 = make_sgd(self.net2.parameters(), hp)
        self.ema1 = ModelEMA(self.net1, hp.ema_alpha)
        self.ema2 = ModelEMA(self.net2, hp.ema_alpha)
        n, c = len(ctx.train), ctx.num_classes
        self.targets1 = torch.zeros(n, c, device=ctx.device)
        self.targets2 = torch.zeros(n, c, device=ctx.device)
        self.global_step = 0

    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        lr = lr_at(epoch, self.hp)
        set_lr(self.optimizer1, lr)
        set_lr(self.optimizer2, lr)
        # network 1 learns from network 2's EMA, then network 2 from network 1's (just updated) EMA
        steps, loss1, reg1 = self._train_one(self.net1, self.optimizer1, self.ema1, self.ema2, self.targets1)
        _, loss2, reg2 = self._train_one(self.net2, self.optimizer2, self.ema2, self.ema1, self.targets2)
        self.global_step += steps
        return {"loss": loss1, "loss2": loss2, "elr_reg": reg1, "elr_reg2": reg2,
                "ema_decay": ema_decay(self.global_step, self.hp)}

    def _train_one(self, net, optimizer, ema_own: ModelEMA, ema_peer: ModelEMA,
                   targets: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        ctx, hp = self.ctx, self.hp
        net.train()
        ema_peer.model.train()  # batch-statistics BN for the targets, as the official EMA networks run
        total = torch.zeros(2, device=ctx.device)
        local = 0
        for idx in ctx.batches(hp.batch_size):
            x = ctx.augment(ctx.train.x[idx])
            onehot = F.one_hot(ctx.train.y[idx], ctx.num_classes).float()
            x_mix, y_mix, lam, perm = mixup(x, onehot, hp.mixup_alpha, ctx.rng, ctx.generator, take_max=True)
            with torch.no_grad(), ctx.autocast():
                p_peer = F.softmax(ema_peer(x).float(), dim=1)
            targets[idx] = hp.beta * targets[idx] + (1 - hp.beta) * p_peer / p_peer.sum(dim=1, keepdim=True)
            t = targets[idx]
            q = lam * t + (1 - lam) * t[perm]
            with ctx.autocast():
                logits = net(x_mix)
            local += 1
            step = self.global_step + local
            coef = sigmoid_rampup(step, hp.coef_step) * hp.lam
            loss, reg = elr_plus_loss(logits, y_mix, q, coef, hp.label_times_target, hp.clamp)
            ctx.step(loss, optimizer)
            ctx.sync_rows(targets, idx)  # data-parallel ranks share their target rows (no-op in one)
            ema_own.update(net, ema_decay(step, hp))
            total += torch.stack([loss.detach(), reg])
        total = total / max(1, local)
        return local, total[0], total[1]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_logits([self.net1, self.net2], x)

    def current_lr(self) -> float:
        return float(self.optimizer1.param_groups[0]["lr"])
