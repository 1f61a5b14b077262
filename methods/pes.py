"""PES: progressive early stopping, then training on the confident samples (Bai et al., NeurIPS 2021).

Bai, Yang, Han, Yang, Li, Mao, Niu, Liu, "Understanding and Improving Early Stopping for Learning with Noisy
Labels" (arXiv 2106.15853). Official code: ``tmllab/PES`` (HEAD 5466238) — ``PES_cs.py`` (PES), ``PES_semi.py``
(PES with MixMatch), ``PES_noisylabels.py`` (CIFAR-N), ``networks/ResNet.py`` (``renew_layers``),
``common/tools.py`` (``train``, ``predict_softmax``).

Later layers memorise noise first, so the network is early-stopped layer by layer:
1. ``t1`` epochs of CE on the whole noisy set, every layer training (SGD).
2. Progressive early stopping, in the one epoch ``t1``: re-initialise the last stage and the head, fix every
   other parameter and train the new ones for ``t2`` epochs; then re-initialise the head again and train it
   alone for ``t3`` epochs (Adam, lr ``pes_lr``, CE on the whole noisy set, network in train mode, so the
   fixed layers' batch-norm statistics still move, as the official ``train``).
3. Every later epoch, before training: the softmax averaged over two augmented views of each training image
   (eval mode); the confident set is {i : argmax = noisy label}. ``pes`` trains CE on it with class weights
   mean(n_c ≠ 0)/n_c (0 for an empty class); ``pes_semi`` trains MixMatch with the confident set labeled
   (one-hot targets, class-weighted Lx, weights capped at 3) and the rest unlabeled (sharpened mean softmax
   over two views), λ_u ramped over 16 epochs from ``t1``, α 4 → 0.75 at half the epochs, no prior penalty,
   ``N // B`` steps of B = labeled + unlabeled rows (unlabeled B/2 when the unconfident set is the larger,
   else its share of B), both loaders restarted when exhausted.

The official SGD optimiser is built once, before the re-initialisation replaces the stage and head modules,
so it never steps the new ones: after step 2 the renewed stage and head stay as the refinement left them and
SGD trains the layers before them (``pes``: conv1..layer3; ``pes_semi``: the trunk under a fixed head). We do
the same (``train_renewed=False``); ``train_renewed=True`` trains everything after the refinement.

Recipes (``PRESETS``), from the run scripts' defaults and README commands:
- ``pes`` ``paper``: CIFAR-10 ResNet-18, CIFAR-100 ResNet-34 (``PES_cs.py`` picks them by dataset); SGD lr 0.1,
  momentum 0.9, wd 1e-4, batch 128, 200 epochs, ÷10 at 100 and 150; t1 25 (CIFAR-100 30), t2 7, t3 5.
- ``pes_semi`` ``paper``: PreAct ResNet-18, SGD lr 0.02, wd 5e-4, batch 128, 300 epochs, cosine to lr/100;
  t1 20 (CIFAR-100 35), head-only refinement of 5 epochs (the script's ``--T2 5`` renews only the head: our t3),
  T 0.5, λ_u 150 (the script default), and the README's commands: CIFAR-10 instance 0.4 λ_u 15, CIFAR-100
  pairflip 0.45 λ_u 50. CIFAR-N (``PES_noisylabels.py``): ResNet-34, λ_u 5 (CIFAR-10N) / 75 (CIFAR-100N).
- Noise conventions of the papers' tables: ``PES_cs.py`` flips to another class (our ``symmetric_exclusive``),
  ``PES_semi.py`` lets the true class be drawn for symmetric noise (``symmetric``; ``dataset_split`` with
  ``include_noise``); both use Xia et al.'s instance noise and the Co-teaching pair flip.
- ``mini`` (CPU scale): CE's ``mini`` net, optimiser and schedule; t1 at CE's best epoch before memorisation
  (digits 15 of 100, CIFAR-10 5 of 25), t2 7, t3 5 (``pes_semi``: head only, 5), ``pes_lr`` 1e-3 (10× the
  paper's: a refinement epoch has ~25 steps here, ~390 on CIFAR), λ_u 25 (``pes_semi``).

Deviations:
- ``PES_cs.py`` trains on a 90 % split and keeps 10 % (noisy labels) to pick the epoch it reports; we train on
  the whole noisy set and the harness reports last and best test accuracy (``PES_semi.py`` uses 100 %).
- Re-initialisation copies the weights of a freshly built model of the same architecture (drawn from the
  trial's seeded generator), not new modules; with the registered builders the initialisation is the same
  (a pretrained builder, ``resnet50`` with ``pretrained``, would restore the pretrained weights instead).
- Random numbers come from the trial's generators; augmentation is the engine's batched transform.
- ``pes_semi`` with an empty unconfident set trains on the labeled rows alone (the official loader fails).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench import evalbatch
from lnlbench.components import linear_rampup, mixmatch, sharpen, soft_cross_entropy
from lnlbench.components.layerwise import fix_, renew_, renewed_modules, train_only_
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method


@dataclass(frozen=True)
class PESHparams(TrainHparams):
    """``PES_cs.py``'s CIFAR-10 defaults; t2/t3 are the refinement epochs of the last stage + head / head."""

    model: str = "resnet18"
    epochs: int = 200
    lr: float = 0.1
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (100, 150)
    t1: int = 25  # epochs of plain CE with every layer training
    t2: int = 7  # refinement epochs of the re-initialised last stage and head
    t3: int = 5  # refinement epochs of the re-initialised head alone
    pes_lr: float = 1e-4  # Adam's lr in the refinement
    class_weight_cap: float = 0.0  # > 0: class weights above it are set to it (pes_semi: 3); 0: no cap
    train_renewed: bool = False  # True: SGD also trains the renewed stage and head (not the official code)


@dataclass(frozen=True)
class PESSemiHparams(PESHparams):
    """``PES_semi.py``'s defaults (MixMatch on the confident / unconfident split)."""

    model: str = "preact_resnet18"
    epochs: int = 300
    lr: float = 0.02
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    eta_min: float = 2e-4  # CosineAnnealingLR(T_max=epochs, eta_min=lr / 100)
    t1: int = 20
    t2: int = 0
    t3: int = 5
    class_weight_cap: float = 3.0
    alpha: float = 4.0
    alpha_late: float = 0.75  # Beta(α, α) from epoch epochs / 2 on
    temperature: float = 0.5
    lambda_u: float = 150.0
    rampup_length: float = 16.0


_PES_C10 = {"model": "resnet18", "epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 1e-4,
            "schedule": "step", "milestones": (100, 150), "t1": 25, "t2": 7, "t3": 5, "pes_lr": 1e-4}
_MINI = {"t2": 7, "t3": 5, "pes_lr": 1e-3}
PES_PRESETS = {
    "paper": {"cifar10": _PES_C10, "cifar100": {**_PES_C10, "model": "resnet34", "t1": 30}},
    "mini": {"digits": DIGITS_MLP | _MINI | {"t1": 15}, "cifar10": MINI_CIFAR.with_hparams(**_MINI, t1=5)},
}
_SEMI = {"model": "preact_resnet18", "epochs": 300, "batch_size": 128, "lr": 0.02, "weight_decay": 5e-4,
         "schedule": "cosine", "eta_min": 2e-4, "t1": 20, "t2": 0, "t3": 5, "pes_lr": 1e-4, "lambda_u": 150.0}
_SEMI_N = {"model": "resnet34", "weight_decay": 5e-4}  # PES_noisylabels.py: PES_semi with ResNet-34
_SEMI_MINI = {"t2": 0, "t3": 5, "pes_lr": 1e-3, "lambda_u": 25.0, "class_weight_cap": 3.0}
SEMI_PRESETS = {
    "paper": {
        "cifar10": _SEMI, "cifar100": {**_SEMI, "t1": 35},
        "cifar10/instance@0.4": {"lambda_u": 15.0},  # README command
        "cifar100/pairflip@0.45": {"lambda_u": 50.0},  # README command
        "cifar10/cifar10n": {**_SEMI_N, "lambda_u": 5.0}, "cifar100/cifar100n": {**_SEMI_N, "lambda_u": 75.0},
    },
    "mini": {"digits": DIGITS_MLP | _SEMI_MINI | {"t1": 15},
             "cifar10": MINI_CIFAR.with_hparams(**_SEMI_MINI, t1=5)},
}


@torch.no_grad()
def two_view_softmax(model: torch.nn.Module, x: torch.Tensor, augment, batch_size: int | None = None,
                     autocast=None) -> torch.Tensor:
    """(N, C) mean softmax over two augmented views of every image, in eval mode (``predict_softmax``)."""
    model.eval()
    parts = []
    batch_size = batch_size or evalbatch.eval_batch_size(x.device)  # methods pass ctx.eval_batch_size
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size]
        with autocast() if autocast is not None else contextlib.nullcontext():
            p = F.softmax(model(augment(xb)).float(), 1) + F.softmax(model(augment(xb)).float(), 1)
        parts.append(p / 2)
    return torch.cat(parts)


def confident_mask(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``splite_confident``: a sample is confident when the prediction agrees with its noisy label."""
    return probs.argmax(1) == y


def class_weights(y_selected: torch.Tensor, num_classes: int, cap: float = 0.0) -> torch.Tensor:
    """mean(n_c over classes with n_c > 0) / n_c, 0 for an empty class, capped at ``cap`` when > 0."""
    n = torch.bincount(y_selected, minlength=num_classes).float()
    w = torch.where(n > 0, n[n > 0].mean() / n.clamp_min(1), torch.zeros_like(n))
    return w.clamp(max=cap) if cap > 0 else w


def semi_batch_sizes(n_labeled: int, n_unlabeled: int, batch_size: int) -> tuple[int, int]:
    """(labeled, unlabeled) rows per step: B/2 unlabeled when they outnumber the labeled, else their share."""
    total = max(1, n_labeled + n_unlabeled)
    unl = batch_size // 2 if n_unlabeled > n_labeled else int(n_unlabeled / total * batch_size)
    return batch_size - unl, unl


@register_method("pes")
class PES(Method):
    """CE until t1, layer-wise re-initialised refinement, then class-weighted CE on the confident samples."""

    display_name = "PES"
    Hparams = PESHparams
    PRESETS = PES_PRESETS
    STATE_ATTRS = ("confident", "selected", "fixed_stages")
    # CE in epoch 0, the refinement (one epoch each) in epoch 1, training on the confident set in epoch 2;
    # B 32 (the contract tests' own), so that a confident set near chance (~10 % after one CE epoch and the
    # refinement on lnlbench perf's 512 images) still fills a full batch (drop_last) and the phase trains
    SMOKE = {"t1": 1, "t2": 1, "t3": 1, "batch_size": 32}
    COMPUTE_FLOOR = ComputeFloor(train=1, epoch_forward=2)  # CE steps; the two-view softmax per epoch
    SEARCH_SPACE = {"t1": ("randint", 10, 40), "pes_lr": ("loguniform", 1e-5, 1e-3)}

    def __init__(self, hp: PESHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        self.model = ctx.make_model(hp.model, **hp.model_kwargs)
        self.optimizer = make_sgd(self.model.parameters(), hp)
        self.confident = torch.zeros(len(ctx.train), device=ctx.device)
        self.selected = False  # whether ``confident`` holds a selection (clean_probability)
        self.fixed_stages = -1  # after the refinement: the renewed stages (+ head) SGD leaves alone; -1 none

    # -- the phases --------------------------------------------------------------------------------
    def _ce_epoch(self, opt: torch.optim.Optimizer, pool: torch.Tensor | None = None,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
        """One pass of (class-weighted) CE over the train set or ``pool``, full batches only (drop_last)."""
        ctx, hp = self.ctx, self.hp
        self.model.train()
        total, steps = torch.zeros((), device=ctx.device), 0
        for b in ctx.batches(hp.batch_size, drop_last=True, n=len(ctx.train) if pool is None else len(pool)):
            idx = b if pool is None else pool[b]
            with ctx.autocast():
                logits = self.model(ctx.augment(ctx.train.x[idx])).float()
            loss = F.cross_entropy(logits, ctx.train.y[idx], weight=weight)
            ctx.step(loss, opt)
            total, steps = total + loss.detach(), steps + 1
        return total / max(1, steps)

    def refine(self) -> torch.Tensor:
        """Progressive early stopping: re-initialise the last stage + head (t2 epochs), then the head (t3),
        each time training only the new parameters with Adam on the whole noisy set."""
        ctx, hp = self.ctx, self.hp
        loss = torch.zeros((), device=ctx.device)
        for last, epochs in ((1, hp.t2), (0, hp.t3)):
            if epochs <= 0:
                continue
            new = renew_(self.model, ctx.make_model(hp.model, **hp.model_kwargs), last)
            train_only_(self.model, new)
            adam = torch.optim.Adam([p for m in new for p in m.parameters()], lr=hp.pes_lr)
            for _ in range(epochs):
                loss = self._ce_epoch(adam)
            self.fixed_stages = max(self.fixed_stages, last)
        self._freeze()
        return loss

    def _freeze(self) -> None:
        """After the refinement SGD trains all but the renewed modules (the official stale optimiser)."""
        if self.fixed_stages >= 0:
            fix_(self.model, [] if self.hp.train_renewed else renewed_modules(self.model, self.fixed_stages))

    def select(self) -> torch.Tensor:
        """The confident mask of this epoch (rank 0's on several ranks), kept for ``clean_probability``."""
        ctx = self.ctx
        probs = two_view_softmax(self.model, ctx.train.x, ctx.augment, ctx.eval_batch_size, ctx.autocast)
        self.confident.copy_(confident_mask(probs, ctx.train.y).float())
        ctx.broadcast_(self.confident)
        self.selected = True
        return self.confident.bool()

    # -- the contract ------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor | float | str]:
        hp = self.hp
        set_lr(self.optimizer, lr_at(epoch, hp))
        if epoch < hp.t1:
            return {"phase": "ce", "loss": self._ce_epoch(self.optimizer)}
        if epoch == hp.t1:
            return {"phase": "refine", "loss": self.refine()}
        conf = self.select()
        pool = conf.nonzero().squeeze(1)
        w = class_weights(self.ctx.train.y[pool], self.ctx.num_classes, hp.class_weight_cap)
        return {"phase": "confident", "loss": self._ce_epoch(self.optimizer, pool, w),
                "confident_fraction": self.confident.mean()}

    def clean_probability(self) -> torch.Tensor | None:
        """The confident set (1 selected, 0 not) from the first epoch after the refinement."""
        return self.confident if self.selected else None

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._freeze()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)


@register_method("pes_semi")
class PESSemi(PES):
    """PES's refinement, then MixMatch with the confident set labeled and the rest unlabeled (``PES_semi.py``)."""

    display_name = "PES (semi)"
    Hparams = PESSemiHparams
    PRESETS = SEMI_PRESETS
    # CE in epoch 0, the head refinement then MixMatch in epoch 1 and 2
    SMOKE = {"t1": 1, "t2": 0, "t3": 1}
    # MixMatch step of B = labelled + unlabelled rows: both views of each mixed and trained (2B), the u·B
    # unlabelled rows' two views guessed (2uB; u = 1/2 when the unconfident set is the larger, else its share,
    # ``semi_batch_sizes``); the two-view softmax over the train set per epoch (2). compute_floor reads the
    # epoch's confident fraction.
    COMPUTE_FLOOR = ComputeFloor(train=2, forward=1, epoch_forward=2)
    SEARCH_SPACE = {"t1": ("randint", 10, 40), "lambda_u": ("loguniform", 1.0, 150.0)}

    @classmethod
    def compute_floor(cls, hp: PESSemiHparams, logs: dict | None = None) -> ComputeFloor:
        """``COMPUTE_FLOOR`` with the unlabelled share of the epoch's split (u = 1/2 without logs)."""
        if not logs or "confident_fraction" not in logs:
            return cls.COMPUTE_FLOOR
        per_million = round(float(logs["confident_fraction"]) * 1_000_000)  # the shares as counts
        _, nu = semi_batch_sizes(per_million, 1_000_000 - per_million, hp.batch_size)
        return ComputeFloor(train=2, forward=2 * nu / hp.batch_size, epoch_forward=2)

    def _cycle(self, pool: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """Shuffled batches of ``pool`` (full ones when it holds one), restarted whenever exhausted."""
        if batch_size == 0 or len(pool) == 0:
            while True:
                yield pool[:0]
        while True:
            yield from (pool[b] for b in self.ctx.batches(batch_size, n=len(pool),
                                                             drop_last=len(pool) >= batch_size))

    def mixmatch_epoch(self, epoch: int, conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``MixMatch_train``: N // B steps of labeled + unlabeled rows; returns the mean (Lx, Lu)."""
        ctx, hp = self.ctx, self.hp
        lab, unl = conf.nonzero().squeeze(1), (~conf).nonzero().squeeze(1)
        nl, nu = semi_batch_sizes(len(lab), len(unl), hp.batch_size)
        cw = class_weights(ctx.train.y[lab], ctx.num_classes, hp.class_weight_cap)
        alpha = hp.alpha if epoch < hp.epochs / 2 else hp.alpha_late
        labeled, unlabeled = self._cycle(lab, nl), self._cycle(unl, nu)
        num_iter = max(1, len(ctx.train) // hp.batch_size)
        self.model.train()
        sums = torch.zeros(2, device=ctx.device)
        for i in range(num_iter):
            xi, ui = next(labeled), next(unlabeled)
            nb, nub = len(xi), len(ui)
            views = ctx.augment(ctx.train.x[torch.cat([xi, xi, ui, ui])])
            x1, x2, u1, u2 = views.split([nb, nb, nub, nub])
            with torch.no_grad(), ctx.autocast():  # train mode, as the official guess
                tu = sharpen((F.softmax(self.model(u1).float(), 1) + F.softmax(self.model(u2).float(), 1)) / 2,
                             hp.temperature) if nub else views.new_zeros(0, ctx.num_classes)
            tx = F.one_hot(ctx.train.y[xi], ctx.num_classes).float()
            mixed, targets, _ = mixmatch([views], [torch.cat([tx, tx, tu, tu])], alpha, ctx.rng, ctx.generator)
            with ctx.autocast():
                logits = self.model(mixed).float()
            lx = soft_cross_entropy(logits[:2 * nb], targets[:2 * nb] * cw)  # Σ_c w_c · mean_i(−t log p)
            lu = ((F.softmax(logits[2 * nb:], 1) - targets[2 * nb:]) ** 2).mean() if nub else logits.new_zeros(())
            ramp = hp.lambda_u * linear_rampup(epoch + i / num_iter, hp.t1, hp.rampup_length)
            ctx.step(lx + ramp * lu, self.optimizer)
            sums += torch.stack([lx.detach(), lu.detach()])
        return sums[0] / num_iter, sums[1] / num_iter

    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor | float | str]:
        hp = self.hp
        set_lr(self.optimizer, lr_at(epoch, hp))
        if epoch < hp.t1:
            return {"phase": "ce", "loss": self._ce_epoch(self.optimizer)}
        out: dict[str, torch.Tensor | float | str] = {"phase": "mixmatch"}
        if epoch == hp.t1:
            out["refine_loss"] = self.refine()
        conf = self.select()
        out["lx"], out["lu"] = self.mixmatch_epoch(epoch, conf)
        out["confident_fraction"] = self.confident.mean()
        out["lambda_u"] = hp.lambda_u * linear_rampup(epoch, hp.t1, hp.rampup_length)
        return out
