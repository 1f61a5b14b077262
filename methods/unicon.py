"""UNICON: uniform clean-sample selection by Jensen-Shannon divergence, and contrastive learning (CVPR 2022).

Karim, Rizve, Rahnavard, Mian, Shah, "UniCon: Combating Label Noise Through Uniform Selection and Contrastive
Learning" (arXiv 2203.14542). Official code: ``nazmul-karim170/UNICON-Noisy-Label`` (HEAD 616dc49) —
``Train_cifar.py``, ``dataloader_cifar.py`` (the uniform selection), ``Contrastive_loss.py`` (``SupConLoss``),
``PreResNet_cifar.py`` (a Linear → BatchNorm1d projection head beside the classifier), ``Train_TinyImageNet.py``.

Two networks, DivideMix's shape. ``warm_up`` epochs of CE (batch 2B; + the confidence penalty for asymmetric
noise), then each epoch, for net 1 and then net 2 (each division computed afresh, net 1 trained in between):
1. JSD_i = JS(p̄_i, onehot(ỹ_i)), p̄ the mean softmax of both nets (test transform, natural log, KL with 1e-10
   guards). Threshold t = mean JSD (t ← t − (t − min)/τ when t > d_u; with natural logs JSD ≤ ln 2 < d_u = 0.7,
   so it never fires at the official settings); selection rate SR = fraction with JSD < t.
2. Uniform selection: per noisy class, the int(SR·N/C) samples of lowest JSD (the whole class when it has
   fewer) are labeled, with w = 1 where JSD < 0.5, else 1 − JSD; every other sample is unlabeled.
3. Per labeled batch of B (unlabeled batch int(B / (2·SR)), restarted when exhausted; |X| // B + 1 steps for
   the ramp): two weak and two strong views of each; co-guessing (sharpened mean softmax of both nets over the
   weak unlabeled views) and co-refinement (w·ỹ + (1 − w)·p̄ of the weak labeled views, sharpened), T = 0.5 —
   DivideMix's ``co_guess`` / ``co_refine``; SimCLR's loss of the two strong unlabeled views' projections
   (τ 0.05); MixMatch of the strong views [x3, x4, u3, u4]; loss = Lx + λ_u·ramp·Lu + λ_c·L_con + the uniform
   prior penalty, ramp = clip((t − warm_up)/16, 0, 1). Test: the sum of both nets' logits.

Recipes (``PRESETS``): ``paper`` CIFAR-10/100 from ``Train_cifar.py``'s defaults and README commands (PreAct
ResNet-18 with the 128-d projection head, SGD lr 0.02, momentum 0.9, wd 5e-4, batch 64, 351 epochs as
``range(num_epochs + 1)``, cosine with T_max 280 to 2e-4 — so the lr rises again after epoch 280, as the
official scheduler does —, warm-up 10 / 30, α 4, λ_u 30, λ_c 0.025, d_u 0.7, τ 5; the penalty for asymmetric
noise); Tiny-ImageNet from ``Train_TinyImageNet.py`` (lr 0.005 ÷10 at epochs 199 and 399, 501 epochs, warm-up
15, α 0.5, λ_u 50). ``mini``: CE's ``mini`` net, optimiser and schedule, DivideMix's ``mini`` batch and
warm-up (digits B 32, warm-up 10; CIFAR-10 B 64, warm-up 5), λ_u 25 as DivideMix's mini.

Deviations:
- Strong views: crop + flip + AutoAugment's CIFAR-10 policy as one batched transform on the device
  (:mod:`lnlbench.components.autoaugment` ``UNICON_POLICY``: DeepVoltaire's magnitudes, signs, fill 128 and
  bicubic shears, the ops equal to PIL's up to rounding); ``strong_augment="complex"`` is MOIT's SimCLR-style transform, ``"weak"`` the dataset's
  crop/flip. Under a protocol without augmentation (``mini`` CIFAR-10), or for non-RGB images, every view is
  the trial's transform. The official Tiny-ImageNet strong views add a colour jitter before the policy, and
  Clothing1M's use ImageNetPolicy; neither is here.
- The second division of an epoch evaluates both nets in eval mode; the official code leaves net 1 in train
  mode after training it (batch statistics, and its running statistics move).
- A class shorter than its quota contributes all its samples (the official array then keeps zeros, i.e.
  repeats sample 0); SR = 0 is raised to 1/N (the official unlabeled batch divides by it).
- Random numbers come from the trial's generators; augmentation is batched on the device.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import ensemble_logits, linear_rampup, mixmatch, per_class_lowest, soft_cross_entropy
from lnlbench.components.augment import ComplexAugment
from lnlbench.components.autoaugment import UNICON_POLICY, autoaugment_cifar10
from lnlbench.components.mixing import co_guess, co_refine, neg_entropy
from lnlbench.components.projection import ProjectionNet, simclr_loss
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method


def unlabeled_batch_size(batch_size: int, rate: float) -> int:
    """Unlabelled rows per step at selection rate SR: int(B / (2·SR)), at least 1 (``Train_cifar.py``)."""
    return max(1, int(batch_size / (2 * rate)))


@dataclass(frozen=True)
class UNICONHparams(TrainHparams):
    """``Train_cifar.py``'s defaults; ``batch_size`` is the labeled batch (2× in warm-up)."""

    epochs: int = 351
    batch_size: int = 64
    lr: float = 0.02
    schedule: str = "cosine"
    t_max: int = 280  # CosineAnnealingLR's period (0: the epochs)
    eta_min: float = 2e-4
    warm_up: int = 10
    alpha: float = 4.0
    lambda_u: float = 30.0
    lambda_c: float = 0.025  # weight of the contrastive loss
    temperature: float = 0.5  # sharpening T
    contrast_temperature: float = 0.05
    d_u: float = 0.7  # mean JSD above which the threshold is lowered
    tau: float = 5.0  # how far it is lowered: t − (t − min) / τ
    rampup_length: float = 16.0
    penalty: bool = False  # confidence penalty in warm-up (asymmetric noise)
    proj_dim: int = 128
    strong_augment: str = "autoaugment"  # autoaugment (crop, flip, CIFAR10Policy) | complex | weak


_CIFAR = {"model": "preact_resnet18", "epochs": 351, "batch_size": 64, "lr": 0.02, "weight_decay": 5e-4,
          "schedule": "cosine", "t_max": 280, "eta_min": 2e-4, "alpha": 4.0, "lambda_u": 30.0, "lambda_c": 0.025}
PRESETS = {
    "paper": {
        "cifar10": {**_CIFAR, "warm_up": 10}, "cifar100": {**_CIFAR, "warm_up": 30},
        "cifar10/asymmetric": {"penalty": True}, "cifar100/asymmetric": {"penalty": True},
        "tiny_imagenet": {**_CIFAR, "epochs": 501, "lr": 0.005, "schedule": "step", "milestones": (199, 399),
                          "warm_up": 15, "alpha": 0.5, "lambda_u": 50.0},
    },
    "mini": {
        "digits": DIGITS_MLP | {"batch_size": 32, "warm_up": 10, "lambda_u": 25.0},
        "digits/pairflip": {"penalty": True},
        "cifar10": MINI_CIFAR.with_hparams(batch_size=64, warm_up=5, lambda_u=25.0),
        "cifar10/asymmetric": {"penalty": True},
    },
}


def unicon_lr(epoch: int, hp: UNICONHparams) -> float:
    """CosineAnnealingLR(T_max, eta_min) stepped per epoch (periodic past T_max), else the recipe's schedule."""
    if hp.schedule == "cosine" and hp.t_max > 0:
        return hp.eta_min + 0.5 * (hp.lr - hp.eta_min) * (1 + math.cos(math.pi * epoch / hp.t_max))
    return lr_at(epoch, hp)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Σ_c p log((p + 1e-10) / (q + 1e-10)) per row (the official guards)."""
    return (p * ((p + 1e-10) / (q + 1e-10)).log()).sum(1)


def jsd_to_labels(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample JS(p, onehot(y)) = ½ KL(p ‖ m) + ½ KL(e_y ‖ m), m = (p + e_y) / 2, natural log."""
    q = F.one_hot(y, probs.shape[1]).float()
    m = (probs + q) / 2
    return 0.5 * kl_divergence(probs, m) + 0.5 * kl_divergence(q, m)


def selection_rate(jsd: torch.Tensor, d_u: float, tau: float) -> float:
    """SR = fraction with JSD below t = mean JSD, t lowered by (t − min)/τ when above d_u."""
    t = jsd.mean()
    if float(t) > d_u:
        t = t - (t - jsd.min()) / tau
    return int((jsd < t).sum()) / len(jsd)


def uniform_selection(jsd: torch.Tensor, y: torch.Tensor, num_classes: int, rate: float) -> torch.Tensor:
    """Boolean mask: per noisy class the int(rate·N/C) samples of lowest JSD (all of a shorter class)."""
    quota = int(rate * len(y) / num_classes)
    return per_class_lowest(jsd, y, torch.full((num_classes,), quota, dtype=torch.long))


def refinement_weights(jsd: torch.Tensor) -> torch.Tensor:
    """w = 1 − JSD, with JSD < 0.5 first set to 0 (``probability[probability < 0.5] = 0``)."""
    return 1 - torch.where(jsd < 0.5, torch.zeros_like(jsd), jsd)


@register_method("unicon")
class UNICON(Method):
    """Two networks, JSD-based uniform selection per class, MixMatch plus SimCLR on the unlabeled views."""

    display_name = "UNICON"
    Hparams = UNICONHparams
    PRESETS = PRESETS
    SMOKE = {"warm_up": 1}  # the selection and SSL from epoch 1
    # Per step of B labelled and u·B unlabelled rows (u = int(B / (2·SR)) / B: 1 at SR = 0.5): trained, the
    # mixed 2B + 2uB strong views and the SimCLR pair 2uB; no-grad, co-guessing 4uB (both nets, two weak
    # views) and co-refinement 2B; per epoch two divisions of both nets over the train set (Train_cifar.py
    # calls Calculate_JSD(net2, net1) before each net's training): 4. compute_floor reads the epoch's SR.
    COMPUTE_FLOOR = ComputeFloor(train=6, forward=6, epoch_forward=4)
    STATE_ATTRS = ("labeled", "selected")
    SEARCH_SPACE = {"lambda_u": ("loguniform", 5.0, 150.0), "lambda_c": ("loguniform", 0.005, 0.1)}

    def __init__(self, hp: UNICONHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        if hp.strong_augment not in ("autoaugment", "complex", "weak"):
            raise LnlError(f"unicon: strong_augment must be autoaugment, complex or weak, got '{hp.strong_augment}'")
        self.net1, self.net2 = (ProjectionNet(ctx.make_model(hp.model, **hp.model_kwargs), hp.proj_dim, "unicon",
                                              batchnorm=True).to(ctx.device) for _ in range(2))
        ctx.dist.broadcast_module_(self.net1)  # the new projection heads alike on every rank
        ctx.dist.broadcast_module_(self.net2)
        self.opt1, self.opt2 = make_sgd(self.net1.parameters(), hp), make_sgd(self.net2.parameters(), hp)
        self.labeled = torch.zeros(len(ctx.train), device=ctx.device)  # net 1's labeled set, this epoch
        self.selected = False
        self._complex = ComplexAugment()

    @classmethod
    def compute_floor(cls, hp: UNICONHparams, logs: dict | None = None) -> ComputeFloor:
        """``COMPUTE_FLOOR`` at the epoch's mean selection rate SR (0.5 without logs)."""
        rate = float(logs["selection_rate"]) if logs and "selection_rate" in logs else 0.5
        u = unlabeled_batch_size(hp.batch_size, max(rate, 1e-6)) / hp.batch_size
        return ComputeFloor(train=2 + 4 * u, forward=2 + 4 * u, epoch_forward=4)

    def current_lr(self) -> float:
        return float(self.opt1.param_groups[0]["lr"])

    def strong(self, x: torch.Tensor) -> torch.Tensor:
        """A strong view: crop, flip and AutoAugment's CIFAR-10 policy (or SimCLR's "complex" transform) where
        the trial augments RGB images, else the weak (the trial's own) transform."""
        ctx, how = self.ctx, self.hp.strong_augment
        if how == "weak" or not ctx.augments or x.shape[1] != 3:
            return ctx.augment(x)
        if how == "autoaugment":
            return ctx.normalize(autoaugment_cifar10(ctx.crop_flip(x), ctx.aug_generator, UNICON_POLICY))
        return ctx.normalize(self._complex(x, ctx.aug_generator))

    def _warmup(self, net: torch.nn.Module, opt: torch.optim.Optimizer) -> torch.Tensor:
        ctx = self.ctx
        net.train()
        total, steps = torch.zeros((), device=ctx.device), 0
        for idx in ctx.batches(2 * self.hp.batch_size):
            with ctx.autocast():
                logits = net(ctx.augment(ctx.train.x[idx])).float()
            loss = F.cross_entropy(logits, ctx.train.y[idx])
            ctx.step(loss + neg_entropy(logits) if self.hp.penalty else loss, opt)
            total, steps = total + loss.detach(), steps + 1
        return total / max(1, steps)

    @torch.no_grad()
    def divide(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(labeled mask, refinement weights, SR) from both nets' mean softmax (rank 0's on several ranks)."""
        ctx, hp = self.ctx, self.hp
        self.net1.eval()
        self.net2.eval()
        bs = ctx.eval_batch_size
        probs = torch.cat([(F.softmax(self.net1(b).float(), 1) + F.softmax(self.net2(b).float(), 1)) / 2
                           for b in (ctx.normalize(ctx.train.x[s:s + bs]) for s in range(0, len(ctx.train), bs))])
        jsd = ctx.broadcast_(jsd_to_labels(probs, ctx.train.y))
        rate = max(selection_rate(jsd, hp.d_u, hp.tau), 1 / len(jsd))
        return uniform_selection(jsd, ctx.train.y, ctx.num_classes, rate), refinement_weights(jsd), rate

    def _cycle(self, pool: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        if len(pool) == 0:
            while True:
                yield pool
        while True:
            yield from (pool[b] for b in self.ctx.batches(batch_size, n=len(pool),
                                                             drop_last=len(pool) >= batch_size))

    def train_net(self, epoch: int, net: ProjectionNet, other: ProjectionNet, opt: torch.optim.Optimizer,
                  mask: torch.Tensor, w: torch.Tensor, rate: float) -> torch.Tensor:
        """One net's epoch (``train``); returns the mean (Lx, Lu, L_con)."""
        ctx, hp = self.ctx, self.hp
        lab, unl = mask.nonzero().squeeze(1), (~mask).nonzero().squeeze(1)
        unlabeled = self._cycle(unl, unlabeled_batch_size(hp.batch_size, rate))
        num_iter = len(lab) // hp.batch_size + 1
        net.train()
        other.eval()
        sums, steps = torch.zeros(3, device=ctx.device), 0
        prior = torch.full((ctx.num_classes,), 1.0 / ctx.num_classes, device=ctx.device)
        for i, b in enumerate(ctx.batches(hp.batch_size, n=len(lab), drop_last=len(lab) >= hp.batch_size)):
            xi, ui = lab[b], next(unlabeled)
            nb, nu = len(xi), len(ui)
            rows = ctx.train.x[torch.cat([xi, xi, ui, ui])]
            x1, x2, u1, u2 = ctx.augment(rows).split([nb, nb, nu, nu])
            strong = self.strong(rows)
            with ctx.autocast():
                tu = co_guess(net, other, u1, u2, hp.temperature) if nu else x1.new_zeros(0, ctx.num_classes)
                tx = co_refine(net, x1, x2, ctx.train.y[xi], w[xi], hp.temperature)
                _, _, u3, u4 = strong.split([nb, nb, nu, nu])
                lcon = simclr_loss(net.embed(u3), net.embed(u4), hp.contrast_temperature) if nu > 1 \
                    else x1.new_zeros(())
            mixed, targets, _ = mixmatch([strong], [torch.cat([tx, tx, tu, tu])], hp.alpha, ctx.rng, ctx.generator)
            with ctx.autocast():
                logits = net(mixed).float()
            lx = soft_cross_entropy(logits[:2 * nb], targets[:2 * nb])
            lu = ((F.softmax(logits[2 * nb:], 1) - targets[2 * nb:]) ** 2).mean() if nu else logits.new_zeros(())
            ramp = hp.lambda_u * linear_rampup(epoch + i / num_iter, hp.warm_up, hp.rampup_length)
            reg = (prior * (prior / F.softmax(logits, 1).mean(0)).log()).sum()
            ctx.step(lx + ramp * lu + hp.lambda_c * lcon + reg, opt)
            sums, steps = sums + torch.stack([lx.detach(), lu.detach(), lcon.detach().float()]), steps + 1
        return sums / max(1, steps)

    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor | float]:
        lr = unicon_lr(epoch, self.hp)
        set_lr(self.opt1, lr)
        set_lr(self.opt2, lr)
        if epoch < self.hp.warm_up:
            return {"loss": (self._warmup(self.net1, self.opt1) + self._warmup(self.net2, self.opt2)) / 2}
        mask1, w1, rate1 = self.divide()
        self.labeled.copy_(mask1.float())
        self.selected = True
        l1 = self.train_net(epoch, self.net1, self.net2, self.opt1, mask1, w1, rate1)
        mask2, w2, rate2 = self.divide()
        l2 = self.train_net(epoch, self.net2, self.net1, self.opt2, mask2, w2, rate2)
        lx, lu, lcon = ((l1 + l2) / 2).unbind()
        return {"lx": lx, "lu": lu, "lcon": lcon, "selection_rate": (rate1 + rate2) / 2,
                "labeled_fraction": self.labeled.mean(),
                "lambda_u": self.hp.lambda_u * linear_rampup(epoch, self.hp.warm_up, self.hp.rampup_length)}

    def clean_probability(self) -> torch.Tensor | None:
        """Net 1's labeled set of the epoch just run (1 labeled, 0 unlabeled); None during warm-up."""
        return self.labeled if self.selected else None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_logits([self.net1, self.net2], x)
