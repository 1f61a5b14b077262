"""Co-teaching (Han et al., "Co-teaching: Robust training of deep neural networks with extremely noisy
labels", NeurIPS 2018; official code ``github.com/bhanML/Co-teaching``, files ``main.py``, ``loss.py``,
``model.py`` read).

Two networks see the same mini-batch. Each ranks the batch by its own cross-entropy and keeps the
``int((1 − R(T))·B)`` samples with the smallest loss; **each network is updated on the samples its peer
kept**. R(T) ramps linearly from 0 to τ^c over the first T_k = ``num_gradual`` epochs, then stays at τ.

The forget rate τ (``forget_rate``):
- ``"flip_rate"`` (default): the noise generator's intended overall flip rate 1 − Σ_c π_c T_cc
  (``ctx.flip_rate_hint``: its transition matrix T, π the class priors before noise, computed by the
  harness). The paper sets τ = ε, its noise rate, which on its own noise (``symmetric_exclusive``,
  ``pairflip``) is the fraction of wrong labels, and so is this there; where the nominal rate is not that
  fraction, this still is: ``asymmetric`` 0.4 flips 5 of CIFAR-10's 10 classes, ≈ 20 % of the labels
  (τ 0.2, not 0.4), and ``symmetric`` 0.5 (true class drawable) leaves 45 % wrong on 10 classes. Real
  noise with a transition (CIFAR-N's empirical matrix): the label set's noise rate. Like the nominal rate
  it is a leak of the protocol, never of which sample is noisy. Without it (clean labels unknown, e.g.
  Clothing1M) it falls back to ``"noise_rate"``, then to ``"estimate"``.
- ``"noise_rate"`` (``forget_rate = noise_rate`` in ``main.py``, for rows that used the nominal rate on
  other noise): the trial's nominal noise rate (``ctx.noise_rate_hint``); without one (real noise) it falls
  back to ``"estimate"``.
- ``"estimate"`` (noise-blind): τ̂ = mean posterior of the high-loss component of a 2-component GMM fitted
  on the per-sample losses recorded during the previous epoch (mean of the two networks' training CE),
  re-estimated at the start of each epoch of the ramp and frozen from epoch T_k on (so the networks' own
  selection cannot drift it later). Epoch 0 uses τ = 0.
- a number: a fixed user value.
Every epoch logs ``tau``, ``tau_source`` and the applied ``forget_rate`` R(T).

``clean_probability()``: per sample, the fraction of the two networks that kept it the last time it was
in a batch (0, ½ or 1; 1 before any selection). ``selection_threshold`` is 0.25, so "selected" means
kept by at least one network, i.e. used to train a network.

Recipes (``PRESETS``):
- ``paper`` CIFAR-10/100 (``main.py``): the 9-layer CNN (``cnn9``), Adam lr 0.001, batch 128, n_epoch 200,
  T_k 10, c 1; from epoch ``epoch_decay_start`` (80; 100 for CIFAR-100) lr decays linearly to 0 at n_epoch
  and Adam's β₁ switches from 0.9 to 0.1; no augmentation (``ToTensor`` only: the recipe's protocol turns
  the trial's crop/flip off; ``--augment`` turns it back on). The official loop trains
  epochs 1…199 (its epoch 0 only evaluates the random networks) and indexes both schedules by that epoch,
  so our 0-based epoch e is its epoch e + 1 and the recipe runs ``epochs = 199`` (n_epoch = epochs + 1).
  Paper numbers (last-10 mean; recalled in the reference sheet, not verified against the PDF): CIFAR-10
  sym-50 74.02, pair-45 72.62; CIFAR-100 sym-50 41.37.
- ``mini`` (CPU scale): digits with the MLP, with the digits crop augmentation (protocol ``augment``);
  CIFAR-10 with CE's ``mini`` protocol (``MINI_CIFAR``: ``cnn_small``, 300 images per class, no
  augmentation — as the paper trains —, 25 epochs). Adam as the official code builds it (lr 0.001, no
  weight decay: ``MINI_CIFAR``'s SGD weight decay is not passed on), with the same linear decay starting at
  40 % of the epochs (80/200 → 10/25), T_k 5.

Deviations:
- The official loss divides the kept samples' *mean* CE by ``num_remember`` again (``torch.sum(mean)/k``);
  we use the mean over the kept samples. Under Adam (the recipe) a constant loss scale changes nothing but
  the ε term; under ``optimizer="sgd"`` the official scale would shrink the step ~B-fold.
- Inputs are normalised with the dataset's mean/std (the official code feeds [0, 1] pixels); with a
  bias + batch norm after the first convolution this is immaterial. Co-teaching trains on the trial's
  training transform like every method; its recipes set the protocol's augmentation (off for CIFAR).
- Test accuracy is network 1's (the official script reports both networks separately);
  ``predict_with="ensemble"`` sums both networks' logits instead.
- The official forget rate is the nominal noise rate (``"noise_rate"``), which on its own noise is the
  flip rate; the default ``"flip_rate"`` keeps that meaning on other noise, ``"estimate"`` is noise-blind.
- ``cnn9`` keeps dropout off in eval mode (see ``lnlbench.models.coteaching_cnn``).
- The last incomplete batch is dropped, as the official loader does (``drop_last=True``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import ensemble_logits, forget_rate_schedule
from lnlbench.components.cotrain import (
    EpochForgetRate,
    adam_plan,
    forget_rate_mode,
    set_adam_plan,
    small_loss_exchange,
)
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import MINI_CIFAR, MINI_TINY, Recipe, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method


@dataclass(frozen=True)
class CoteachingHparams(TrainHparams):
    """Co-teaching's recipe (bhanML/Co-teaching main.py defaults for CIFAR-10)."""

    model: str = "cnn9"
    epochs: int = 199  # official epochs 1..199 of n_epoch = 200
    batch_size: int = 128
    lr: float = 0.001
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam: the official Adam plan below | sgd: make_sgd + the TrainHparams schedule
    epoch_decay_start: int = 80  # (official index) lr → 0 linearly from here, Adam β₁ 0.9 → beta1_decayed
    beta1_decayed: float = 0.1
    forget_rate: str | float = "flip_rate"  # "flip_rate" | "noise_rate" (nominal) | "estimate" | a number
    num_gradual: int = 10  # T_k
    exponent: float = 1.0  # c
    predict_with: str = "net1"  # net1 (official report) | ensemble


_CIFAR = Recipe({"model": "cnn9", "epochs": 199, "batch_size": 128, "lr": 0.001, "optimizer": "adam",
                 "epoch_decay_start": 80, "num_gradual": 10, "exponent": 1.0},
                protocol=dict(augment=False))  # the official CIFAR transform is ToTensor only
PRESETS = {
    "paper": {"cifar10": _CIFAR, "cifar100": _CIFAR.with_hparams(epoch_decay_start=100)},
    "mini": {
        "digits": Recipe({"model": "mlp", "epochs": 100, "batch_size": 64, "lr": 0.001, "epoch_decay_start": 40,
                          "num_gradual": 10}, protocol=dict(augment=True)),
        "cifar10": MINI_CIFAR.with_hparams(lr=0.001, weight_decay=0.0, epoch_decay_start=10, num_gradual=5),
        # the cifar10 entry's schedule scaled to MINI_TINY's 12 epochs
        "tiny_imagenet": MINI_TINY.with_hparams(lr=0.001, weight_decay=0.0, epoch_decay_start=5, num_gradual=3),
    },
}


@register_method("coteaching")
class Coteaching(EpochForgetRate, Method):
    """Two networks, each trained on the small-loss samples its peer selects (Han et al. 2018)."""

    display_name = "Co-teaching"

    Hparams = CoteachingHparams
    PRESETS = PRESETS
    # bhanML/Co-teaching main.py @7c7fbe2 [code]: L24 `--num_gradual` default 10, help "can be 5, 10, 15
    # ... equal to Tk"; L25 `--exponent` default 1, help "can be 0.5, 1, 2 ... c"; L19 Adam lr 0.001. That
    # the paper itself ran these T_k/c grids: [R]. The forget rate τ is not searched: main.py L22/L112-115
    # sets τ = noise_rate unless `--forget_rate` is given, no grid [code] (a τ-multiple study in the paper:
    # [R], unverified); ours is a mode (see the docstring). The Adam lr range (a decade each side): ours.
    SEARCH_SPACE = {"lr": ("loguniform", 1e-4, 1e-2), "num_gradual": ("choice", [5, 10, 15]),
                    "exponent": ("choice", [0.5, 1.0, 2.0])}
    STATE_ATTRS = ("kept", "last_loss", "tau_estimate")
    SMOKE = {"num_gradual": 3, "epoch_decay_start": 2}  # R = τ/2 in epoch 0, then τ; Adam's decay plan from 1
    COMPUTE_FLOOR = ComputeFloor(train=1)  # each net's own step: 2 forward+backward per batch
    selection_threshold = 0.25  # kept by at least one of the two networks

    def __init__(self, hp: CoteachingHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.mode, self.tau_fixed = self._forget_rate_mode(hp.forget_rate, ctx.noise_rate_hint,
                                                           ctx.flip_rate_hint)
        if hp.optimizer not in ("adam", "sgd") or hp.predict_with not in ("net1", "ensemble"):
            raise LnlError(f"coteaching: optimizer must be adam|sgd and predict_with net1|ensemble, "
                           f"got {hp.optimizer!r}, {hp.predict_with!r}")
        self.net1 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.net2 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.optimizer1, self.optimizer2 = (self._optimizer(n) for n in (self.net1, self.net2))
        n = len(ctx.train)
        self.kept = torch.ones(n, device=ctx.device)
        self.last_loss = torch.full((n,), float("nan"), device=ctx.device)
        self.tau_estimate = 0.0

    @staticmethod
    def _forget_rate_mode(spec, hint: float | None, flip: float | None = None) -> tuple[str, float]:
        return forget_rate_mode(spec, hint, flip, "coteaching")

    def _optimizer(self, net: torch.nn.Module) -> torch.optim.Optimizer:
        if self.hp.optimizer == "sgd":
            return make_sgd(net.parameters(), self.hp)
        return torch.optim.Adam(net.parameters(), lr=self.hp.lr, weight_decay=self.hp.weight_decay)

    def _set_schedule(self, epoch: int) -> None:
        hp = self.hp
        if hp.optimizer == "sgd":
            for opt in (self.optimizer1, self.optimizer2):
                set_lr(opt, lr_at(epoch, hp))
            return
        lr, beta1 = adam_plan(epoch, hp.lr, hp.epochs, hp.epoch_decay_start, hp.beta1_decayed)
        set_adam_plan((self.optimizer1, self.optimizer2), lr, beta1)


    def train_epoch(self, epoch: int) -> dict:
        ctx, hp = self.ctx, self.hp
        tau = self._tau(epoch)
        rate = forget_rate_schedule(epoch + 1, tau, hp.num_gradual, hp.exponent)
        self._set_schedule(epoch)
        self.net1.train()
        self.net2.train()
        total = torch.zeros(2, device=ctx.device)
        steps = 0
        for idx in ctx.batches(hp.batch_size, drop_last=True):
            xb = ctx.train.x[idx]
            x = ctx.augment(xb)  # the trial's training transform (normalise only when the protocol says so)
            y = ctx.train.y[idx]
            with ctx.autocast():
                logits1, logits2 = self.net1(x), self.net2(x)
            ce1 = F.cross_entropy(logits1.float(), y, reduction="none")
            ce2 = F.cross_entropy(logits2.float(), y, reduction="none")
            # the exchange: each network learns from the samples its PEER found small-loss
            loss1, loss2, keep1, keep2 = small_loss_exchange(ce1, ce2, rate)
            ctx.step(loss1, self.optimizer1)
            ctx.step(loss2, self.optimizer2)
            self.kept[idx] = (keep1.float() + keep2.float()) / 2
            self.last_loss[idx] = (ce1.detach() + ce2.detach()) / 2
            ctx.sync_rows(self.kept, idx)  # data-parallel ranks share their rows (no-op in one process)
            ctx.sync_rows(self.last_loss, idx)
            total += torch.stack([loss1.detach(), loss2.detach()])
            steps += 1
        total = total / max(1, steps)
        return {"loss": total[0], "loss2": total[1], "forget_rate": rate, "tau": tau, "tau_source": self.mode}

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
