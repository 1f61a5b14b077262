"""DivideMix: two networks, GMM co-divide, label co-refinement/co-guessing and MixMatch.

Li, Socher, Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised Learning", ICLR 2020
(arXiv 2002.07394). Official code: github.com/LiJunnan1992/DivideMix (``Train_cifar.py``,
``Train_clothing1M.py``, ``Train_webvision.py``, ``dataloader_*.py``); ../shared/reference/methods.md §1.

Each epoch after ``warm_up`` epochs of CE (+ the confidence penalty Σ p log p when ``penalty``):
1. co-divide: per net, per-sample CE in eval mode on the test transform, min-max normalised, averaged over the
   last ``loss_history`` epochs (5 at 90 % noise), 2-component GMM; w = posterior of the low-mean component;
   X = {w > p_threshold}, U = the rest. Net 1 trains on net 2's division and net 2 on net 1's.
2. per labeled batch of B (an unlabeled batch of B drawn alongside, its iterator restarted when exhausted;
   |X|//B + 1 for the ramp), both views of X and U augmented in one call: co-refinement
   sharpen(w·y + (1−w)·p̄_net(x)), co-guessing sharpen(p̄ of both nets over both views of u), T = 0.5;
   MixMatch over the whole concatenated [x1, x2, u1, u2] with λ' = max(λ, 1−λ);
   loss = Lx (soft CE, first 2B rows) + λ_u·clip((t − warm_up)/16, 0, 1)·Lu (MSE of softmax, the rest)
   + Σ π log(π / p̄) with π uniform, t = epoch + batch_idx/num_iter. 3. Test: sum of both nets' logits.

Recipes (``PRESETS``): ``paper`` CIFAR-10/100 (PreAct ResNet-18, 301 epochs as the official
``range(num_epochs + 1)``, lr 0.02 ÷10 at 150, batch 64, warm-up 10/30, α 4) with the per-setting λ_u and
p_threshold table (methods.md §1.3; appendix Table 7 as quoted by the author in issues #10, #15, #26),
the confidence penalty for asymmetric noise; Clothing1M (ImageNet ResNet-50, lr 0.002 ÷10 at 40, wd 1e-3,
batch 32, warm-up 1 with the penalty, α 0.5, λ_u 0 with only the first 2B mixed rows forwarded, a fresh
class-balanced 32,000-sample set per net and epoch for the division = num_batches 1000 × 32, 64,000 for
warm-up); mini-WebVision (InceptionResNetV2 from scratch, lr 0.01 ÷10 at 40, batch 32, warm-up 1 without
penalty, α 0.5, λ_u 0). ``mini`` (CPU scale, not the paper's): the optimiser, schedule and epochs of CE's
``mini`` so the two compare directly — digits: MLP, 100 epochs at constant lr 0.05, B = 32 (64 in warm-up,
CE's batch), warm-up 10; CIFAR-10: CE's ``MINI_CIFAR`` protocol (small ResNet, 300 images per class, no
augmentation — so DivideMix's two "views" of an image are the same —, constant lr 0.05 with Nesterov, 25
epochs), B = 64, warm-up 5 (CE starts memorising after ~5 epochs there, as the paper's 10 of 300 precede it).
λ_u 25 and τ 0.5 (the 50 % row); for asymmetric noise (and digits' pairflip, its stand-in) the penalty and
λ_u 0 (the asym-40 % row).

Which cells the ``paper`` table covers, and its sources (a cell it does not cover runs on the dataset's
defaults, λ_u 25 and τ 0.5, and the result says ``recipe: default`` with the missing key):
- ``symmetric`` at 0.2 / 0.5 / 0.8 / 0.9 on CIFAR-10 and CIFAR-100: appendix Table 7, as the author quotes
  it in issues #10 (CIFAR-100 90 %: λ_u 150, τ 0.6) and #15 / #26, and users in #17, #46, #50.
- ``symmetric_exclusive`` at the same rates: Table 6 (the "true" noise ratio, i.e. the true class
  excluded); the author: "Table 6 uses the same set of hyper-parameters as Table 1" (issue #19). We map by
  nominal rate (exclusive 0.8 → the 0.8 row). The author adds "80 % noise in Table 6 is similar to 90 %
  in Table 1" — the actual noise, not the hyperparameters; mapping by actual rate would give CIFAR-10 0.8
  the 0.9 row (λ_u 50, τ 0.6, loss history 5); on CIFAR-100 both readings agree. Table 6's own columns
  were not checked against the paper.
- ``asymmetric`` 0.4 on CIFAR-10 (λ_u 0: author, issues #15, #26); the penalty for any asymmetric rate
  (``Train_cifar.py``). CIFAR-100 asymmetric: not in the paper (author, issue #41), so no rate entry.
- Not covered, so ``recipe: default``: ``instance`` noise (not in the paper; InstanceGM's authors used λ_u
  25 "for most noise rates", their issue #1, another paper's choice), CIFAR-N (the CIFAR-N authors ran
  λ_u 25 everywhere, then lowered it "for low noise" after asking the DivideMix authors, values not given:
  cifar-10-100n issue #7), other rates.

``clean_probability()`` is the division net 1 trained on in the epoch just run, i.e. net 2's GMM posterior
(net 2 trained on net 1's, the mirror image); None during warm-up.

Deviations from the official code:
- Random numbers come from the trial's seeded generators (λ from ``ctx.rng``, permutations, shuffles and
  augmentation from ``ctx.generator``) and the GMM's k-means start is seeded from ``ctx.rng``; the official
  code uses the global RNGs (seed 123) and leaves the GMM unseeded.
- Augmentation is the engine's batched transform on the device (the same zero-padded crop + flip as
  torchvision's), not per-sample PIL in a DataLoader.
- The partner net's two co-guessing forwards (eval mode) run as one batch (same values); the trained net's
  four no-grad forwards stay separate per view and in the official order, so its batch-norm batch
  statistics and running-stat updates are the official ones.
- An empty unlabeled set trains on X alone (Lu = 0; the official loop crashes). The penalty uses log_softmax.
- Clothing1M: the subsets are drawn afresh every epoch from the images the dataset loader holds: by
  default all 1M keys, streamed from their files (lnlbench.stream), as the official loader draws; with a
  capped pool (``--data-opt max_train=64000``, the fixed-subset mode) each epoch's draw is that pool's.
  Model selection uses the clean validation set (14,313
  images, read when ``clean_val_key_list.txt`` is present): ``selected_acc`` is the test accuracy of the
  two-net ensemble at the epoch of the ensemble's best validation accuracy; the official code keeps each
  net's best-on-validation weights separately (possibly from different epochs) and tests their ensemble.
  Samples outside the epoch's subset get clean probability NaN. mini-WebVision (``Train_webvision.py``):
  InceptionResNetV2 from scratch (timm's port), 81 epochs, lr 0.01 ÷10 at 40, batch 32, α 0.5, λ_u 0,
  warm-up 1 epoch on the whole set; ``imagenet_acc`` per epoch is the ImageNet-validation test.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import (
    ensemble_logits,
    gmm_clean_probability,
    linear_rampup,
    mixmatch,
    per_sample_loss,
    soft_cross_entropy,
)
from lnlbench.components.mixing import co_guess, co_refine, neg_entropy
from lnlbench.components.selection import minmax
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, Recipe, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method
from lnlbench.search import SGD_SPACE


@dataclass(frozen=True)
class DivideMixHparams(TrainHparams):
    """Train_cifar.py's defaults; ``batch_size`` is the labeled (= unlabeled) batch, 2× in warm-up."""

    epochs: int = 301
    batch_size: int = 64
    warm_up: int = 10  # epochs of CE before co-divide (CIFAR-10 10, CIFAR-100 30, Clothing1M/WebVision 1)
    alpha: float = 4.0  # Beta(α, α) of MixMatch
    lambda_u: float = 25.0
    p_threshold: float = 0.5
    temperature: float = 0.5  # sharpening T
    rampup_length: float = 16.0  # epochs of the linear λ_u ramp
    penalty: bool = False  # confidence penalty in warm-up (asymmetric noise, Clothing1M)
    loss_history: int = 1  # normalised losses averaged over this many epochs before the GMM (5 at r = 0.9)
    unlabeled_forward: bool = True  # False: forward only the first 2B mixed rows, no Lu (Clothing1M, WebVision)
    num_samples: int = 0  # > 0: per net and epoch a class-balanced subset of this many for the division


_CIFAR = {"model": "preact_resnet18", "epochs": 301, "batch_size": 64, "lr": 0.02, "weight_decay": 5e-4,
          "schedule": "step", "milestones": (150,), "alpha": 4.0, "lambda_u": 25.0, "p_threshold": 0.5}
_LARGE = {"epochs": 81, "batch_size": 32, "schedule": "step", "milestones": (40,), "warm_up": 1, "alpha": 0.5,
          "lambda_u": 0.0, "p_threshold": 0.5, "unlabeled_forward": False}
# Appendix Table 7 (λ_u, p_threshold; the loss history at 90 %), per dataset and symmetric rate.
_TABLE7 = {
    "cifar10": {0.2: {"lambda_u": 0.0}, 0.5: {"lambda_u": 25.0}, 0.8: {"lambda_u": 25.0},
                0.9: {"lambda_u": 50.0, "p_threshold": 0.6, "loss_history": 5}},
    "cifar100": {0.2: {"lambda_u": 25.0}, 0.5: {"lambda_u": 150.0}, 0.8: {"lambda_u": 150.0},
                 0.9: {"lambda_u": 150.0, "p_threshold": 0.6, "loss_history": 5}},
}
PRESETS = {
    "paper": {
        "cifar10": {**_CIFAR, "warm_up": 10}, "cifar100": {**_CIFAR, "warm_up": 30},
        # Table 1 (symmetric) and Table 6 (symmetric_exclusive: the "true" noise ratio), which the author
        # says uses Table 1's hyperparameters (issue #19): the same entries by nominal rate.
        **{f"{ds}/{noise}@{r:g}": hp for ds, rows in _TABLE7.items() for r, hp in rows.items()
           for noise in ("symmetric", "symmetric_exclusive")},
        "cifar10/asymmetric": {"penalty": True},  # Train_cifar.py: the penalty whenever noise_mode == 'asym'
        "cifar10/asymmetric@0.4": {"lambda_u": 0.0, "p_threshold": 0.5},
        "cifar100/asymmetric": {"penalty": True},  # no CIFAR-100 asymmetric rate in the paper (issue #41)
        "clothing1m": Recipe({**_LARGE, "model": "resnet50", "model_kwargs": {"pretrained": True}, "lr": 0.002,
                              "weight_decay": 1e-3, "penalty": True, "num_samples": 32000},
                             protocol=dict(train_pool=64000)),  # one epoch's warm-up draw, 2 × 32,000
        "webvision": {**_LARGE, "model": "inception_resnet_v2", "lr": 0.01, "weight_decay": 5e-4},
    },
    "mini": {
        "digits": DIGITS_MLP | {"batch_size": 32, "warm_up": 10},
        "digits/pairflip": {"penalty": True, "lambda_u": 0.0},  # digits' stand-in for asymmetric noise
        "cifar10": MINI_CIFAR.with_hparams(batch_size=64, warm_up=5),
        "cifar10/symmetric": {"lambda_u": 25.0},
        "cifar10/asymmetric": {"penalty": True, "lambda_u": 0.0},
    },
}


def split_division(pool: torch.Tensor | None, prob: torch.Tensor,
                   threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labeled indices, their w, unlabeled indices): X = {w > threshold}, U = the rest (dataloader_cifar.py)."""
    pool = torch.arange(len(prob), device=prob.device) if pool is None else pool
    sel = prob > threshold
    return pool[sel], prob[sel], pool[~sel]


def balanced_epoch_sample(y: torch.Tensor, n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Clothing1M's per-epoch sample: shuffle, keep an image while its class has < n/C and the set < n.

    dataloader_clothing1M.py's greedy rule, drawn afresh on the device each epoch, in shuffled order. Not the
    loader's fixed pool (``lnlbench.datasets.clothing1m.capped_balanced_pool``: ⌊n/C⌋ per class, sorted).
    """
    order = torch.randperm(len(y), device=y.device, generator=generator)
    ys = y[order]
    rank = (F.one_hot(ys, num_classes).cumsum(0) - 1).gather(1, ys.view(-1, 1)).view(-1)
    return order[rank < n / num_classes][:n]


class _Take:
    """x[index[slice]] on demand, so a subset's losses are computed without copying its images."""

    def __init__(self, x: torch.Tensor, index: torch.Tensor):
        self.x, self.index = x, index

    def __getitem__(self, s: slice) -> torch.Tensor:
        return self.x[self.index[s]]


@register_method("dividemix")
class DivideMix(Method):
    """Two networks, each trained by MixMatch on the other's GMM division of the noisy train set."""

    display_name = "DivideMix"

    Hparams = DivideMixHparams
    PRESETS = PRESETS
    # DivideMix (Li et al., ICLR 2020) Table 7: λ_u ∈ {0, 25, 150} and the clean threshold τ ∈ {0.5, 0.6}
    # over its settings; §4.1: Beta α = 4 (0.5 on Clothing1M/WebVision). lr/wd: ours (SGD_SPACE).
    SEARCH_SPACE = {**SGD_SPACE, "lambda_u": ("choice", [0.0, 25.0, 150.0]),
                    "p_threshold": ("choice", [0.5, 0.6]), "alpha": ("choice", [0.5, 4.0])}
    SMOKE = {"warm_up": 1}  # reach co-divide + MixMatch after one epoch (contract tests, lnlbench perf)
    # per MixMatch step: the 4B mixed rows trained, 6B rows guessed without gradients (the net: x1, x2, u1, u2;
    # the partner: u1, u2); per epoch the two divisions' passes over the train set
    COMPUTE_FLOOR = ComputeFloor(train=4, forward=6, epoch_forward=2)
    STATE_ATTRS = ("loss_hist", "hist_count")

    def __init__(self, hp: DivideMixHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        if hp.loss_history > 1 and hp.num_samples:
            raise LnlError("dividemix: loss_history > 1 needs the whole train set each epoch (num_samples=0)")
        self.net1 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.net2 = ctx.make_model(hp.model, **hp.model_kwargs)
        self.opt1, self.opt2 = make_sgd(self.net1.parameters(), hp), make_sgd(self.net2.parameters(), hp)
        n = len(ctx.train) if hp.num_samples == 0 else 0
        self.loss_hist = torch.zeros(2, max(1, hp.loss_history), n, device=ctx.device)
        self.hist_count = 0
        self.prob: torch.Tensor | None = None  # the division net 1 trained on this epoch (full length)
        self.selection_threshold = hp.p_threshold  # the harness scores X = {w > p_threshold}
        # the images and labels the epoch trains on (TSSD appends its golden set to the noisy train set)
        self.data_x, self.data_y = ctx.train.x, ctx.train.y

    def current_lr(self) -> float:
        return float(self.opt1.param_groups[0]["lr"])

    def _subset(self, n: int) -> torch.Tensor | None:
        return None if n == 0 else balanced_epoch_sample(self.ctx.train.y, n, self.ctx.num_classes,
                                                         self.ctx.generator)

    # -- warm-up -----------------------------------------------------------------------------------
    def _warmup(self, net: torch.nn.Module, opt: torch.optim.Optimizer) -> torch.Tensor:
        ctx, hp = self.ctx, self.hp
        pool = self._subset(2 * hp.num_samples)
        net.train()
        total, steps = torch.zeros((), device=ctx.device), 0
        batches = ctx.batches(2 * hp.batch_size, n=len(self.data_y)) if pool is None else \
            ctx.batches(2 * hp.batch_size, over=pool)
        for idx in batches:
            with ctx.autocast():
                logits = net(ctx.augment(self.data_x[idx])).float()
            loss = F.cross_entropy(logits, self.data_y[idx])
            if hp.penalty:
                loss = loss + neg_entropy(logits)
            ctx.step(loss, opt)
            total, steps = total + loss.detach(), steps + 1
        return total / max(1, steps)

    # -- co-divide ---------------------------------------------------------------------------------
    def _divide(self, k: int, net: torch.nn.Module) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Net k's GMM clean probability over the train set (or over a fresh balanced subset)."""
        ctx, hp = self.ctx, self.hp
        pool = self._subset(hp.num_samples)
        x, y = (ctx.train.x, ctx.train.y) if pool is None else (_Take(ctx.train.x, pool), ctx.train.y[pool])
        net.eval()
        # data-parallel ranks divide alike: rank 0's losses (identical weights; guards float differences)
        loss = minmax(ctx.broadcast_(per_sample_loss(net, x, y, ctx.normalize, ctx.eval_batch_size, ctx.autocast)))
        if pool is None:  # the loss history (official: only used when r = 0.9)
            h = self.loss_hist.shape[1]
            self.loss_hist[k, self.hist_count % h] = loss
            loss = self.loss_hist[k, :min(self.hist_count + 1, h)].mean(0)
        prob = gmm_clean_probability(loss, seed=int(self.ctx.rng.integers(2**31)))
        return pool, torch.from_numpy(prob).float().to(ctx.device)

    def _full(self, pool: torch.Tensor | None, prob: torch.Tensor) -> torch.Tensor:
        if pool is None:
            return prob
        return torch.full((len(self.ctx.train),), float("nan"), device=prob.device).index_copy_(0, pool, prob)

    # -- one network's epoch -----------------------------------------------------------------------
    def _unlabeled(self, pool: torch.Tensor) -> Iterator[torch.Tensor]:
        """Shuffled batches of the unlabeled pool, restarted (reshuffled) whenever exhausted."""
        while True:
            yield from self.ctx.batches(self.hp.batch_size, over=pool)
            if len(pool) == 0:
                yield pool

    def _train_net(self, epoch: int, net: torch.nn.Module, other: torch.nn.Module, opt: torch.optim.Optimizer,
                   division: tuple[torch.Tensor | None, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self._train_sets(epoch, net, other, opt, *split_division(*division, self.hp.p_threshold))

    def _train_sets(self, epoch: int, net: torch.nn.Module, other: torch.nn.Module,
                    opt: torch.optim.Optimizer, lab: torch.Tensor, w: torch.Tensor,
                    unl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One net's MixMatch epoch on labeled indices ``lab`` (clean weights ``w``) and unlabeled ``unl``
        (positions in ``data_x``), ``other`` co-guessing (TSSD trains on its own sets through this)."""
        ctx, hp = self.ctx, self.hp
        num_iter = len(lab) // hp.batch_size + 1
        unlabeled = self._unlabeled(unl)
        net.train()
        other.eval()
        sums, steps = torch.zeros(2, device=ctx.device), 0
        weight = torch.zeros(len(self.data_y), device=w.device, dtype=w.dtype).index_copy_(0, lab, w)
        for i, xi in enumerate(ctx.batches(hp.batch_size, over=lab)):
            ui = next(unlabeled)
            nb, nu = len(xi), len(ui)
            views = ctx.augment(self.data_x[torch.cat([xi, xi, ui, ui])])  # both views of X and U, one call
            x1, x2, u1, u2 = views.split([nb, nb, nu, nu])
            with ctx.autocast():
                tu = co_guess(net, other, u1, u2, hp.temperature) if nu else views.new_zeros(0, ctx.num_classes)
                tx = co_refine(net, x1, x2, self.data_y[xi], weight[xi], hp.temperature)
            mixed, targets, _ = mixmatch([views], [torch.cat([tx, tx, tu, tu])], hp.alpha, ctx.rng, ctx.generator)
            if not hp.unlabeled_forward:
                mixed, targets = mixed[:2 * nb], targets[:2 * nb]
            with ctx.autocast():
                logits = net(mixed).float()
            lx = soft_cross_entropy(logits[:2 * nb], targets[:2 * nb])
            lu = ((F.softmax(logits[2 * nb:], 1) - targets[2 * nb:]) ** 2).mean() if len(logits) > 2 * nb \
                else logits.new_zeros(())
            ramp = hp.lambda_u * linear_rampup(epoch + i / num_iter, hp.warm_up, hp.rampup_length)
            prior = torch.full((ctx.num_classes,), 1.0 / ctx.num_classes, device=ctx.device)
            reg = (prior * (prior / F.softmax(logits, 1).mean(0)).log()).sum()
            ctx.step(lx + ramp * lu + reg, opt)
            sums, steps = sums + torch.stack([lx.detach(), lu.detach()]), steps + 1
        return sums[0] / max(1, steps), sums[1] / max(1, steps), len(lab)

    # -- the contract ------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor | float]:
        lr = lr_at(epoch, self.hp)
        set_lr(self.opt1, lr)
        set_lr(self.opt2, lr)
        if epoch < self.hp.warm_up:
            self.prob = None
            return {"loss": (self._warmup(self.net1, self.opt1) + self._warmup(self.net2, self.opt2)) / 2}
        div1, div2 = self._divide(0, self.net1), self._divide(1, self.net2)
        self.hist_count += 1
        self.prob = self._full(*div2)
        lx1, lu1, n1 = self._train_net(epoch, self.net1, self.net2, self.opt1, div2)  # co-divide: B's split
        lx2, lu2, n2 = self._train_net(epoch, self.net2, self.net1, self.opt2, div1)  # and A's for B
        return {"lx": (lx1 + lx2) / 2, "lu": (lu1 + lu2) / 2, "labeled_1": n1, "labeled_2": n2,
                "lambda_u": self.hp.lambda_u * linear_rampup(epoch, self.hp.warm_up, self.hp.rampup_length)}

    def clean_probability(self) -> torch.Tensor | None:
        return self.prob

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_logits([self.net1, self.net2], x)
