"""DISC: dynamic instance-specific selection and correction (Li, Han, Shan, Chen, "DISC: Learning from Noisy
Labels via Dynamic Instance-Specific Selection and Correction", CVPR 2023; official code
``github.com/JackYFL/DISC`` at a21e910, files ``algorithms/DISC.py``, ``configs/DISC_CIFAR.py``,
``datasets/randaugment.py``, ``losses/loss_mixup.py``, ``losses/loss_other.py`` (``GCELoss``), ``main.py``,
``shs/DISC_cifar10.sh`` read).

One network sees a weak view (crop + flip) and a strong view (crop + flip + RandAugment, n = 2, m = 5, and a
grey Cutout) of every batch. It stores each sample's softmax of both views, and after every epoch compares the
confidence of the given label with the sample's own threshold, the EMA of its past maximum confidence
(:func:`update_thresholds`; EMA weight λ, thresholds start at 1/N):

    clean C  = [p_w(ỹ) > τ_w] ∧ [p_s(ỹ) > τ_s]        hard H = [p_w(ỹ) > τ_w] ⊕ [p_s(ỹ) > τ_s]
    purified P = [max p̄ > min((τ_w + τ_s)/2 + σ, 0.99)] ∧ ¬(C ∪ H),  relabelled argmax p̄, p̄ = (p_w + p_s)/2

(:func:`divide`). Before ``start_epoch`` both views train by cross-entropy; from it on, per batch,

    L = λ_ce·Σ_C [CE_w + CE_s] / B  +  λ_h·Σ_H [GCE_w + GCE_s] / B  +  mixup_w(C∪H∪P) + mixup_s(C∪H∪P)

(the official ``CE(subset)·|subset|/B``; GCE with q = 0.7; mixup with λ ~ Beta(5, 5), λ ← max(λ, 1 − λ), on each
view of the weak-label set, labels ỹ on C ∪ H and the corrected ones on P, each a batch mean over that set).

Recipes (``PRESETS``, the official ``DISC.py`` branches on dataset, noise and rate):
- ``paper`` CIFAR-10 / CIFAR-100: ResNet-18 (the official CIFAR ResNet: 3×3 stem, Kaiming init), batch 128,
  200 epochs, start epoch 20, σ 0.5, λ_ce 1, λ_h 1, EMA λ 0.99; SGD lr 0.1 (no momentum, as the official call),
  weight decay 1e-3, ×0.1 at 80 and 160. Asymmetric noise: λ 0.95. Rates 0.6 and 0.8: λ_h 0.2, λ 0.95. Rates
  above 0.6: Adam lr 0.001, lr → 0 linearly from epoch 120 and β₁ 0.9 → 0.1 (set after each epoch, as the
  official ``adjust_learning_rate``). Instance noise: ResNet-34, start epoch 15.
- ``mini``: CE's ``mini`` recipes (same net, optimiser, schedule) with the start epoch at a tenth of the
  epochs (20 of 200): digits 10 of 100, CIFAR-10 (25 epochs) 3, and λ 0.95 for 25 epochs.

Deviations:
- The official CIFAR loader pads with reflection; the views here use the trial's crop (zero padding) and flip,
  and RandAugment runs before the crop and flip (the official: after). The strong ops are the batched
  PIL-equivalent ones of ``lnlbench.components.autoaugment``.
- Under a protocol without augmentation (``augment: false``), the strong view is the plain view (every
  method's own augmentation follows the trial's protocol).
- The official code skips the optimiser step when the batch's loss is exactly 0 (no sample in any set); so
  do we (one host sync per batch decides the mixup subset anyway).
- ``clean_probability`` is C (1/0) once the first division has run; ``selection_sets`` adds C ∪ H.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from lnlbench.components import mix, sample_lambda
from lnlbench.components.autoaugment import randaugment_ops
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method


@dataclass(frozen=True)
class DISCHparams(TrainHparams):
    """DISC's CIFAR recipe (JackYFL/DISC algorithms/DISC.py, configs/DISC_CIFAR.py)."""

    model: str = "resnet18"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 1e-3
    schedule: str = "step"
    milestones: tuple[int, ...] = (80, 160)
    optimizer: str = "sgd"  # sgd | adam (the official plan: lr → 0 from epoch_decay_start, β₁ → beta1_decayed)
    epoch_decay_start: int = 120
    beta1_decayed: float = 0.1
    start_epoch: int = 20  # epochs of two-view cross-entropy before selection and correction
    ema_momentum: float = 0.99  # λ of the instance thresholds τ ← λ·τ + (1 − λ)·max p
    sigma: float = 0.5  # correction margin above the mean threshold
    lambda_ce: float = 1.0
    lambda_h: float = 1.0
    q: float = 0.7  # GCE exponent on the hard set
    alpha: float = 5.0  # mixup Beta(α, α)
    randaug_n: int = 2
    randaug_m: int = 5

    PROBABILITIES: ClassVar[tuple[str, ...]] = TrainHparams.PROBABILITIES + ("ema_momentum", "beta1_decayed")


def disc_cell(rate: float, noise: str) -> dict:
    """The official per-setting branches of ``DISC.__init__`` for CIFAR-10 and CIFAR-100."""
    hp: dict = {}
    if noise == "asymmetric":
        hp["ema_momentum"] = 0.95
    if noise == "instance":
        hp |= {"start_epoch": 15, "model": "resnet34"}
    if rate in (0.6, 0.8):
        hp |= {"lambda_h": 0.2, "ema_momentum": 0.95}
    if rate > 0.6:
        hp |= {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0}
    return hp


_CIFAR = {"model": "resnet18", "model_kwargs": {"init": "kaiming"}, "epochs": 200, "batch_size": 128, "lr": 0.1,
          "momentum": 0.0, "weight_decay": 1e-3,
          "schedule": "step", "milestones": (80, 160), "start_epoch": 20}
_RATES = {"symmetric": (0.2, 0.4, 0.5, 0.6, 0.8), "asymmetric": (0.2, 0.3, 0.4), "instance": (0.2, 0.4, 0.6)}
PRESETS = {
    "paper": {**{ds: _CIFAR for ds in ("cifar10", "cifar100")},
              **{f"{ds}/{noise}@{r:g}": disc_cell(r, noise) for ds in ("cifar10", "cifar100")
                 for noise, rates in _RATES.items() for r in rates}},
    "mini": {"digits": DIGITS_MLP | {"start_epoch": 10},
             "cifar10": MINI_CIFAR.with_hparams(start_epoch=3, ema_momentum=0.95)},
}


@torch.no_grad()
def divide(w_probs: torch.Tensor, s_probs: torch.Tensor, labels: torch.Tensor, tau_w: torch.Tensor,
           tau_s: torch.Tensor, sigma: float) -> dict[str, torch.Tensor]:
    """The clean / hard / purified sets and the weak labels (``DISC.train``'s selection and correction)."""
    rows = torch.arange(labels.shape[0], device=labels.device)
    w_mask = w_probs[rows, labels] > tau_w
    s_mask = s_probs[rows, labels] > tau_s
    clean = w_mask & s_mask
    selected = w_mask | s_mask
    conf, corrected = ((w_probs + s_probs) / 2).max(1)
    threshold = ((tau_w + tau_s) / 2 + sigma).clamp(max=0.99)
    purified = (conf > threshold) & ~selected
    weak_labels = torch.where(purified, corrected, labels)
    return {"clean": clean, "hard": selected & ~clean, "purified": purified, "weak": selected | purified,
            "weak_labels": weak_labels}


@torch.no_grad()
def update_thresholds(tau: torch.Tensor, probs: torch.Tensor, momentum: float) -> torch.Tensor:
    """τ ← λ·τ + (1 − λ)·max_c p_c, per sample (in place)."""
    return tau.mul_(momentum).add_((1 - momentum) * probs.max(1).values)


def gce(logits: torch.Tensor, labels: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample (1 − p_y^q)/q with p clamped to [1e-7, 1] (DISC's ``GCELoss``)."""
    p = F.softmax(logits.float(), 1).clamp(1e-7, 1.0).gather(1, labels[:, None]).squeeze(1)
    return (1 - p ** q) / q


def adam_plan(epoch: int, hp: DISCHparams) -> tuple[float, float]:
    """(lr, β₁) of a 0-based epoch under the official plan, set at the end of the epoch before."""
    prev = epoch - 1
    if prev < hp.epoch_decay_start:
        return hp.lr, 0.9
    return hp.lr * (hp.epochs - prev) / max(1, hp.epochs - hp.epoch_decay_start), hp.beta1_decayed


@register_method("disc")
class DISC(Method):
    """Per-sample EMA confidence thresholds divide the set into clean, hard and purified parts (Li et al. 2023)."""

    display_name = "DISC"
    Hparams = DISCHparams
    PRESETS = PRESETS
    STATE_ATTRS = ("w_probs", "s_probs", "tau_w", "tau_s", "clean", "hard", "purified", "weak_labels", "divisions")
    SMOKE = {"start_epoch": 1}  # two-view CE in epoch 0, then the sets from its division
    # Per step: the weak and strong views of B in one forward + backward (2B), and the mixup of each view of
    # the weak-label set C ∪ H ∪ P (2wB, w its share; the official Mixup forwards too); the thresholds use
    # the training forward's softmax, no extra pass. Here w = 1; compute_floor reads the logged set sizes.
    COMPUTE_FLOOR = ComputeFloor(train=4)
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {"ema_momentum": ("choice", [0.9, 0.95, 0.99]),
                                                "sigma": ("uniform", 0.2, 0.6),
                                                "lambda_h": ("choice", [0.2, 0.5, 1.0])}

    def __init__(self, hp: DISCHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.model = ctx.make_model(hp.model, **hp.model_kwargs)
        if hp.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            self.optimizer = make_sgd(self.model.parameters(), hp)
        n, c, dev = len(ctx.train), ctx.num_classes, ctx.device
        self.w_probs = torch.zeros(n, c, device=dev)
        self.s_probs = torch.zeros(n, c, device=dev)
        self.tau_w = torch.full((n,), 1.0 / n, device=dev)
        self.tau_s = torch.full((n,), 1.0 / n, device=dev)
        self.clean = torch.zeros(n, dtype=torch.bool, device=dev)
        self.hard = torch.zeros_like(self.clean)
        self.purified = torch.zeros_like(self.clean)
        self.weak_labels = ctx.train.y.clone()
        self.divisions = 0

    @classmethod
    def compute_floor(cls, hp: DISCHparams, logs: dict | None = None) -> ComputeFloor:
        """``COMPUTE_FLOOR`` with w = |C ∪ H ∪ P| / N as logged (the sets the epoch's division leaves for the
        next epoch, about those it trained on), 1 without logs."""
        keys = ("clean_fraction", "hard_fraction", "purified_fraction")
        w = sum(float(logs[k]) for k in keys) if logs and all(k in logs for k in keys) else 1.0
        return ComputeFloor(train=2 + 2 * w)

    def _set_schedule(self, epoch: int) -> None:
        if self.hp.optimizer == "adam":
            lr, beta1 = adam_plan(epoch, self.hp)
            for group in self.optimizer.param_groups:
                group["lr"], group["betas"] = lr, (beta1, 0.999)
        else:
            set_lr(self.optimizer, lr_at(epoch, self.hp))

    def strong(self, x: torch.Tensor) -> torch.Tensor:
        """RandAugment (n, m) + grey Cutout, then the trial's crop + flip + normalisation."""
        ctx, hp = self.ctx, self.hp
        if not ctx.augments:
            return ctx.augment(x)
        return ctx.augment(randaugment_ops(x, hp.randaug_n, hp.randaug_m, ctx.aug_generator))

    def _mixup(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """DISC's ``Mixup.forward``: one λ per call, a permutation of the subset, soft CE (batch mean)."""
        ctx = self.ctx
        lam = sample_lambda(ctx.rng, self.hp.alpha, take_max=True)
        perm = torch.randperm(x.shape[0], device=x.device, generator=ctx.generator)
        xm, ym = mix(x, F.one_hot(labels, ctx.num_classes).float(), lam, perm)
        with ctx.autocast():
            logits = self.model(xm)
        return -(ym * F.log_softmax(logits.float(), 1)).sum(1).mean()

    def _batch_loss(self, idx: torch.Tensor, xw: torch.Tensor, xs: torch.Tensor, zw: torch.Tensor,
                    zs: torch.Tensor, main: bool) -> tuple[torch.Tensor, bool]:
        """(loss, whether any sample of the batch is in a set): CE on both views, or DISC's three terms."""
        hp, y, b = self.hp, self.ctx.train.y[idx], idx.shape[0]
        if not main:
            return F.cross_entropy(zw.float(), y) + F.cross_entropy(zs.float(), y), True
        clean, hard = self.clean[idx], self.hard[idx]
        weak = clean | hard | self.purified[idx]
        ce = F.cross_entropy(zw.float(), y, reduction="none") + F.cross_entropy(zs.float(), y, reduction="none")
        hard_loss = (gce(zw, y, hp.q) + gce(zs, y, hp.q)) * hard
        loss = (hp.lambda_ce * (ce * clean).sum() + hp.lambda_h * hard_loss.sum()) / b
        n_weak = int(weak.sum())  # C ∪ H ∪ P: no sample in it means no sample in any set
        if n_weak:
            rows = torch.nonzero(weak).squeeze(1)
            labels = self.weak_labels[idx[rows]]
            loss = loss + self._mixup(xw[rows], labels) + self._mixup(xs[rows], labels)
        return loss, n_weak > 0

    def train_epoch(self, epoch: int) -> dict:
        ctx, hp = self.ctx, self.hp
        main = epoch >= hp.start_epoch
        self._set_schedule(epoch)
        self.model.train()
        total = torch.zeros((), device=ctx.device)
        steps = 0
        for idx in ctx.batches(hp.batch_size):
            xw, xs = ctx.augment(ctx.train.x[idx]), self.strong(ctx.train.x[idx])
            with ctx.autocast():
                logits = self.model(torch.cat([xw, xs]))
            zw, zs = logits[: idx.shape[0]], logits[idx.shape[0]:]
            loss, any_set = self._batch_loss(idx, xw, xs, zw, zs, main)
            if any_set or ctx.dist.active:  # ranks step together (their gradients are averaged)
                ctx.step(loss, self.optimizer)
                total += loss.detach()
                steps += 1
            with torch.no_grad():
                self.w_probs[idx] = F.softmax(zw.float(), 1)
                self.s_probs[idx] = F.softmax(zs.float(), 1)
            ctx.sync_rows(self.w_probs, idx)
            ctx.sync_rows(self.s_probs, idx)
        self._divide()
        n = float(len(ctx.train))
        return {"loss": total / max(1, steps), "phase": "disc" if main else "warmup",
                "clean_fraction": self.clean.sum() / n, "hard_fraction": self.hard.sum() / n,
                "purified_fraction": self.purified.sum() / n, "tau_mean": (self.tau_w + self.tau_s).mean() / 2}

    def _divide(self) -> None:
        """End of epoch: the sets from the thresholds so far, then the thresholds' EMA step (DISC.train)."""
        sets = divide(self.w_probs, self.s_probs, self.ctx.train.y, self.tau_w, self.tau_s, self.hp.sigma)
        self.clean.copy_(sets["clean"])
        self.hard.copy_(sets["hard"])
        self.purified.copy_(sets["purified"])
        # the official code keeps a weak label once set: ỹ on C ∪ H, the corrected label on P, else as before
        self.weak_labels.copy_(torch.where(sets["clean"] | sets["hard"] | sets["purified"], sets["weak_labels"],
                                           self.weak_labels))
        update_thresholds(self.tau_w, self.w_probs, self.hp.ema_momentum)
        update_thresholds(self.tau_s, self.s_probs, self.hp.ema_momentum)
        self.divisions += 1

    def clean_probability(self) -> torch.Tensor | None:
        return self.clean.float() if self.divisions > 0 else None

    def selection_sets(self) -> dict[str, torch.Tensor]:
        return {"selected": self.clean | self.hard} if self.divisions > 0 else {}

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)
