"""ProMix: progressive clean-sample selection with debiased semi-supervised training (IJCAI 2023).

Xiao, Dong, Wang, Feng, Wu, Chen, Zhao, "ProMix: Combating Label Noise via Maximizing Clean Sample Utility",
IJCAI 2023 (arXiv 2207.10276). Official code: ``Justherozen/ProMix`` main branch at 40d8378 — ``Train_promix.py``,
``run.sh``, ``model.py`` (``DualNet``: two ResNet-18s, each with a primary ``linear`` head and an auxiliary
``pseudo_linear`` head on the pooled features), ``utils/utils.py`` (debiasing, priors), ``utils/randaug.py``,
``utils/fmix.py``, ``dataloader_cifarn.py``. **This file follows the IJCAI version** (main branch, its
``run.sh``), not the CIFAR-N challenge report's (branch ``LMNL_challenge``, ``Train_cifarn.py``: 420 epochs,
label guessing over the last 150, no debiasing).

Two networks trained jointly (one SGD over both; the loss is the sum). ``warm_up`` epochs of CE on the weak view
(+ the confidence penalty for asymmetric noise), then each epoch:
1. Class-wise small-loss selection (CSS), per net: CE in eval mode on the test transform; per noisy class j the
   max(min(⌈ρ·N/C⌉, N_j), 1) smallest losses are the base clean set; each net trains on its own (no exchange).
   ρ ramps linearly from ``rho_start`` to ``rho_end`` over ``rampup_length`` epochs (run.sh: ρ constant). The
   official min-max normalisation of the losses keeps their order, so it is left out.
2. Per batch of B (weak view: crop + flip; strong: RandomAugment(3, 5) with Cutout, then crop + flip):
   matched high-confidence selection (MHCS) adds the samples whose (not debiased) softmax gives the noisy label
   p > τ. After epoch ``epochs − 1 − start_expand``, label guessing by agreement (LGA) adds, while the set is
   under ``threshold``·B, samples both nets predict alike with confidence > τ (at most up to threshold·B, the most
   confident first), labelled by the net's debiased prediction.
3. Debiasing: each net keeps class priors π (its chosen set) and π_u (the rest), EMA (m = ``bias_m``) of its
   weak-view softmax per step. Losses use logit-adjusted logits z + α_o·log π (``debias_output``); pseudo-labels
   use softmax(z − α_pl·log π) (``debias_pl``).
4. Per net, on the chosen set: primary head CE(weak) + w·(CE(strong) + mixup + FMix) with w = ramp(rampup_length);
   the auxiliary (pseudo) head the same losses, plus β·[CE(weak) + w·CE(strong)] on the unchosen set against
   sharpened (T = 0.5) debiased pseudo-labels of the net's primary head (π_u debiasing). β = 0.1·ramp(2·rampup)
   for epochs < 2·rampup_length and 0 after (the official expression; β = 1 throughout when debias_pl = 0), so
   after epoch 100 the unchosen samples reach the loss only through LGA. These pseudo-labels are soft, with no
   confidence threshold (none in the code, unlike FixMatch).
   Mixup: Beta(4, 4), λ ← max(λ, 1 − λ), within the chosen weak views; FMix: α 1, decay 3. Test: the mean of
   both nets' primary heads ("model ensemble for inference").

Recipes (``PRESETS``): ``paper`` from ``run.sh`` and ``Train_promix.py``'s defaults: ResNet-18 (BasicBlock,
Kaiming init), SGD lr 0.05, momentum 0.9, wd 5e-4, batch 256, 601 epochs (``range(num_epochs + 1)``, cosine over
600 to lr·10⁻³), rampup 50, LGA over the last 250, threshold 0.9, bias_m 0.9999, T 0.5; CIFAR-10: τ 0.99,
warm-up 10, debias 0.8 / 0.8, ρ 0.7 at symmetric 20 %, 0.5 at symmetric 50 %, asymmetric 40 % and CIFAR-10N;
CIFAR-100: τ 0.95, warm-up 30, debias 0.5 / 0.5, ρ 0.7 / 0.5 / 0.5 (sym 20 %, sym 50 %, CIFAR-100N). Other
cells run on the defaults (ρ 0.2 → 0.6). ``mini``: CE's ``mini`` net, optimiser and schedule; B = CE's batch
(digits 64; CIFAR-10 64, DivideMix's mini), warm-up 10 / 5, ρ 0.5 constant, τ 0.99, and scaled to the short
runs: rampup 8 / 4 epochs, LGA over the last 40 of 100 / 10 of 25, the priors' EMA m = 0.99 (0.9999 would
barely move them in ~2,000 steps).

Deviations:
- The strong view's ops are the batched tensor versions of PIL's (``lnlbench.components.autoaugment``
  ``randaugment_fixmatch``); Cutout's box is ⌊v⌋ pixels from a uniform corner (PIL's rectangle is inclusive,
  v + 1). Under a protocol without augmentation (``mini`` CIFAR-10), or for non-RGB images, the strong view is
  the trial's transform.
- Test accuracy is that of the mean of both primary heads (the official's printed "Acc Mean"); the official
  log file records net 1's pseudo-head accuracy instead.
- The warm-up's confidence penalty is Σ p log p of the logits (the official clamps the logits at 1e-12 first).
- An empty chosen / unchosen part of a batch gives zero losses and leaves its prior unchanged (the official
  means over an empty set are NaN); the unchosen loss is not computed while β = 0 (the official multiplies it
  by 0); the backbone's unused projection head (``self.head``) is left out.
- LGA's ties in mean confidence keep the batch order (a stable sort; the official ``sort`` is not stable).
- The priors are updated right after the optimiser step rather than before it, from the same pre-step
  predictions (the same values).
- Random numbers come from the trial's generators; augmentation is batched on the device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lnlbench.components import (
    AuxHeadNet,
    ensemble_logits,
    linear_rampup,
    per_class_lowest,
    per_sample_loss,
    require_features,
    sample_lambda,
    sharpen,
    soft_cross_entropy,
)
from lnlbench.components.autoaugment import randaugment_fixmatch
from lnlbench.components.mixing import fmix, fmix_loss, neg_entropy
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method


@dataclass(frozen=True)
class ProMixHparams(TrainHparams):
    """``Train_promix.py``'s defaults (official names in the comments)."""

    model: str = "resnet18"
    epochs: int = 601  # range(num_epochs + 1), num_epochs 600
    batch_size: int = 256
    lr: float = 0.05
    schedule: str = "cosine"
    eta_min_factor: float = 1e-3  # cosine floor lr·lr_decay_rate³
    warm_up: int = 10  # pretrain_ep: epochs of CE
    rampup_length: int = 50  # warmup_ep: the ramp of ρ, w and β
    rho_start: float = 0.2  # rho_range
    rho_end: float = 0.6
    tau: float = 0.99  # MHCS / LGA confidence
    threshold: float = 0.9  # LGA: fill the chosen set up to this fraction of the batch
    start_expand: int = 250  # LGA in the epochs after epochs − 1 − start_expand
    debias_output: float = 0.8
    debias_pl: float = 0.8
    bias_m: float = 0.9999  # EMA of the class priors, per step
    temperature: float = 0.5  # T, sharpening of the unchosen set's pseudo-labels
    mix_alpha: float = 4.0
    fmix_alpha: float = 1.0
    fmix_decay: float = 3.0
    penalty: bool = False  # confidence penalty in warm-up (noise_mode asym)
    strong_augment: str = "randaugment"  # randaugment (RandomAugment(3, 5) + crop/flip) | weak
    randaug_n: int = 3


_CIFAR = {"model": "resnet18", "model_kwargs": {"init": "kaiming"}, "epochs": 601, "batch_size": 256,
          "lr": 0.05, "weight_decay": 5e-4, "schedule": "cosine"}
_RHO = {r: {"rho_start": r, "rho_end": r} for r in (0.5, 0.7)}
_MINI = {"rho_start": 0.5, "rho_end": 0.5, "tau": 0.99, "bias_m": 0.99}
PRESETS = {
    "paper": {
        "cifar10": {**_CIFAR, "tau": 0.99, "warm_up": 10, "debias_output": 0.8, "debias_pl": 0.8},
        "cifar10/symmetric@0.2": _RHO[0.7], "cifar10/symmetric@0.5": _RHO[0.5],
        "cifar10/asymmetric": {"penalty": True}, "cifar10/asymmetric@0.4": _RHO[0.5],
        "cifar10/cifar10n": _RHO[0.5],
        "cifar100": {**_CIFAR, "tau": 0.95, "warm_up": 30, "debias_output": 0.5, "debias_pl": 0.5},
        "cifar100/symmetric@0.2": _RHO[0.7], "cifar100/symmetric@0.5": _RHO[0.5],
        "cifar100/asymmetric": {"penalty": True}, "cifar100/cifar100n": _RHO[0.5],
    },
    "mini": {
        "digits": DIGITS_MLP | _MINI | {"warm_up": 10, "rampup_length": 8, "start_expand": 40},
        "digits/pairflip": {"penalty": True},
        "cifar10": MINI_CIFAR.with_hparams(batch_size=64, warm_up=5, rampup_length=4, start_expand=10, **_MINI),
        "cifar10/asymmetric": {"penalty": True},
    },
}


def promix_lr(epoch: int, hp: ProMixHparams) -> float:
    """``adjust_learning_rate`` with --cosine: lr floor lr·10⁻³, period epochs − 1 (the official num_epochs)."""
    if hp.schedule != "cosine":
        return lr_at(epoch, hp)
    eta_min = hp.lr * hp.eta_min_factor
    return eta_min + (hp.lr - eta_min) * (1 + math.cos(math.pi * epoch / max(1, hp.epochs - 1))) / 2


def selection_rate(epoch: int, rho_start: float, rho_end: float, length: int) -> float:
    """ρ = ρ_start + (ρ_end − ρ_start)·min(1, epoch / length) (``linear_rampup2``)."""
    return rho_start + (rho_end - rho_start) * linear_rampup(epoch, 0, length)


def unchosen_weight(epoch: int, length: int, debias_pl: float) -> float:
    """β of the unchosen set's loss: 0.1·min(1, epoch/(2L)), then 0 from epoch 2L on; 1 when debias_pl = 0."""
    if not debias_pl:
        return 1.0
    return 0.0 if epoch >= 2 * length else 0.1 * linear_rampup(epoch, 0, 2 * length)


def class_wise_small_loss(losses: torch.Tensor, y: torch.Tensor, num_classes: int, rho: float) -> torch.Tensor:
    """CSS: per noisy class j the max(min(⌈ρ·N/C⌉, N_j), 1) smallest losses (empty classes skipped)."""
    per_class = math.ceil(len(y) * (1.0 / num_classes) * rho)  # the official float expression
    return per_class_lowest(losses, y, torch.full((num_classes,), max(per_class, 1)))


def matched_high_confidence(probs: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """MHCS: the samples whose predicted probability of their noisy label exceeds τ."""
    return probs.gather(1, y.view(-1, 1)).squeeze(1) > tau


def label_guessing(chosen: torch.Tensor, score1: torch.Tensor, score2: torch.Tensor, agree: torch.Tensor,
                   tau: float, threshold: float) -> torch.Tensor:
    """LGA: when |chosen| < threshold·B, add unchosen samples with both confidences > τ and agreeing
    predictions, at most int(threshold·B) − |chosen| of them, those of highest mean confidence first."""
    b = len(chosen)
    room = int(b * threshold) - int(chosen.sum())
    if chosen.sum() / b >= threshold:
        return chosen
    cand = (score1 > tau) & (score2 > tau) & agree & ~chosen
    rank = torch.argsort(torch.argsort(torch.where(cand, -(score1 + score2) / 2, math.inf), stable=True))
    return chosen | (cand & (rank < max(room, 0)))


def debias_logits(logits: torch.Tensor, prior: torch.Tensor, strength: float) -> torch.Tensor:
    """``debias_output``: z + α·log π (the logit-adjusted, debiased margin-based loss's logits)."""
    return logits + strength * torch.log(prior.detach())


def debiased_probs(logits: torch.Tensor, prior: torch.Tensor, strength: float) -> torch.Tensor:
    """``debias_pl``: softmax(z − α·log π), the pseudo-labels with the class prior divided out."""
    return F.softmax(logits.float() - strength * torch.log(prior.detach()), dim=1)


def update_prior(prior: torch.Tensor, probs: torch.Tensor, momentum: float) -> torch.Tensor:
    """``bias_update``: m·π + (1 − m)·mean(probs); π unchanged for an empty set."""
    if len(probs) == 0:
        return prior
    return momentum * prior + (1 - momentum) * probs.detach().float().mean(0)


def masked_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the per-sample ``loss`` over ``mask`` (0 when empty)."""
    return (loss * mask).sum() / mask.sum().clamp(min=1)


@register_method("promix")
class ProMix(Method):
    """Two networks with auxiliary pseudo heads: CSS + MHCS selection, debiased losses, mixup and FMix."""

    display_name = "ProMix"
    Hparams = ProMixHparams
    PRESETS = PRESETS
    SMOKE = {"warm_up": 1}  # selection and the pseudo-head losses from epoch 1 (LGA on: the span covers all)
    # One SGD step over both nets (Train_promix.py's one optimizer): per net the weak and strong views of B
    # (2B, both heads) and four passes of the chosen rows c·B (mixup and FMix, each for the primary and the
    # pseudo head, as the official code); per epoch the CSS losses of each net over the train set (2).
    # Here c = 0.5 (the CSS share ρ of most paper cells); compute_floor reads the epoch's chosen fraction.
    COMPUTE_FLOOR = ComputeFloor(train=2 * (2 + 4 * 0.5), epoch_forward=2)
    STATE_ATTRS = ("priors", "chosen", "css", "selected")
    # run.sh's own values for ρ, τ and the debiasing strengths; the grid itself is ours
    SEARCH_SPACE = {"rho_end": ("choice", [0.3, 0.5, 0.7]), "tau": ("choice", [0.9, 0.95, 0.99]),
                    "debias_output": ("choice", [0.5, 0.8]), "debias_pl": ("choice", [0.5, 0.8])}

    def __init__(self, hp: ProMixHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        if hp.strong_augment not in ("randaugment", "weak"):
            raise LnlError(f"promix: strong_augment must be randaugment or weak, got '{hp.strong_augment}'")
        nets = []
        for _ in range(2):
            backbone = ctx.make_model(hp.model, **hp.model_kwargs)
            require_features(backbone, "promix", hp.model)
            net = AuxHeadNet(backbone, ctx.num_classes).to(ctx.device)
            ctx.dist.broadcast_module_(net)  # the new pseudo head alike on every rank
            nets.append(net)
        self.net1, self.net2 = nets
        self.optimizer = make_sgd(list(self.net1.parameters()) + list(self.net2.parameters()), hp)
        # rows: π1, π2 (chosen sets), π1_u, π2_u (unchosen), uniform at the start
        self.priors = torch.full((4, ctx.num_classes), 1.0 / ctx.num_classes, device=ctx.device)
        self.chosen = torch.zeros(len(ctx.train), device=ctx.device)  # net 1's chosen set in the epoch just run
        self.css = torch.zeros(len(ctx.train), dtype=torch.bool, device=ctx.device)
        self.selected = False

    @classmethod
    def compute_floor(cls, hp: ProMixHparams, logs: dict | None = None) -> ComputeFloor:
        """``COMPUTE_FLOOR`` with c the epoch's chosen fraction (CSS + MHCS + LGA; logged for net 1, taken
        for both), or ρ_end without logs."""
        c = float(logs["chosen_fraction"]) if logs and "chosen_fraction" in logs else hp.rho_end
        return ComputeFloor(train=2 * (2 + 4 * c), epoch_forward=2)

    def strong(self, x: torch.Tensor) -> torch.Tensor:
        """RandomAugment(n, 5) + Cutout, then the crop and flip, normalised (the weak transform where the trial
        does not augment RGB images)."""
        ctx = self.ctx
        if self.hp.strong_augment == "weak" or not ctx.augments or x.shape[1] != 3:
            return ctx.augment(x)
        return ctx.normalize(ctx.crop_flip(randaugment_fixmatch(x, self.hp.randaug_n, ctx.aug_generator)))

    def warmup(self) -> torch.Tensor:
        ctx, hp = self.ctx, self.hp
        self.net1.train()
        self.net2.train()
        total, steps = torch.zeros((), device=ctx.device), 0
        for idx in ctx.batches(hp.batch_size):
            x, y = ctx.augment(ctx.train.x[idx]), ctx.train.y[idx]
            with ctx.autocast():
                z1, z2 = self.net1(x).float(), self.net2(x).float()
            loss = F.cross_entropy(z1, y) + F.cross_entropy(z2, y)
            ctx.step(loss + neg_entropy(z1) + neg_entropy(z2) if hp.penalty else loss, self.optimizer)
            total, steps = total + loss.detach(), steps + 1
        return total / max(1, steps)

    @torch.no_grad()
    def select(self, net: AuxHeadNet, rho: float) -> torch.Tensor:
        """CSS on the net's eval-mode losses over the train set (rank 0's on several ranks)."""
        ctx = self.ctx
        net.eval()
        losses = ctx.broadcast_(per_sample_loss(net, ctx.train.x, ctx.train.y, ctx.normalize,
                                                ctx.eval_batch_size, ctx.autocast))
        return class_wise_small_loss(losses, ctx.train.y, ctx.num_classes, rho)

    def mix_losses(self, net: AuxHeadNet, x: torch.Tensor, t: torch.Tensor, prior: torch.Tensor,
                   aux: bool) -> torch.Tensor:
        """Mixup (Beta(4, 4), max) + FMix losses of one head on the chosen weak views ``x`` with one-hot ``t``."""
        ctx, hp = self.ctx, self.hp
        if len(x) == 0:
            return x.new_zeros(())
        head = (lambda v: net.forward_with_aux(v)[1]) if aux else net
        lam = sample_lambda(ctx.rng, hp.mix_alpha, take_max=True)
        perm = torch.randperm(len(x), device=x.device, generator=ctx.generator)
        with ctx.autocast():
            z_mix = head(lam * x + (1 - lam) * x[perm]).float()
        loss = soft_cross_entropy(debias_logits(z_mix, prior, hp.debias_output), lam * t + (1 - lam) * t[perm])
        xf, fperm, flam = fmix(x, hp.fmix_alpha, ctx.rng, ctx.generator, hp.fmix_decay)
        with ctx.autocast():
            z_f = head(xf).float()
        return loss + fmix_loss(debias_logits(z_f, prior, hp.debias_output), t.argmax(1), fperm, flam)

    def net_loss(self, k: int, net: AuxHeadNet, out: dict, xw: torch.Tensor, chosen: torch.Tensor,
                 target: torch.Tensor, w: float, beta: float) -> torch.Tensor:
        """Net k's primary-head and pseudo-head losses (``loss_net`` + ``loss_net_ph``)."""
        hp = self.hp
        pi, pi_u = self.priors[k], self.priors[2 + k]

        def ce(z: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor, t: torch.Tensor = target) -> torch.Tensor:
            return masked_mean(soft_cross_entropy(debias_logits(z, prior, hp.debias_output), t, "none"), mask)

        xc, tc = xw[chosen], target[chosen]
        primary = ce(out["zw"], pi, chosen) + w * (ce(out["zs"], pi, chosen)
                                                   + self.mix_losses(net, xc, tc, pi, aux=False))
        pseudo = ce(out["hw"], pi, chosen) + w * (ce(out["hs"], pi, chosen)
                                                  + self.mix_losses(net, xc, tc, pi, aux=True))
        if beta > 0:
            t_u = sharpen(debiased_probs(out["zw"].detach(), pi_u, hp.debias_pl), hp.temperature)
            pseudo = pseudo + beta * (ce(out["hw"], pi_u, ~chosen, t_u) + w * ce(out["hs"], pi_u, ~chosen, t_u))
        return primary + pseudo

    def train_step(self, epoch: int, idx: torch.Tensor, css: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ctx, hp = self.ctx, self.hp
        rows, y = ctx.train.x[idx], ctx.train.y[idx]
        xw, xs = ctx.augment(rows), self.strong(rows)
        nets, outs = (self.net1, self.net2), []
        for net in nets:
            with ctx.autocast():
                (zw, hw), (zs, hs) = net.forward_with_aux(xw), net.forward_with_aux(xs)
            outs.append({"zw": zw.float(), "hw": hw.float(), "zs": zs.float(), "hs": hs.float()})
        with torch.no_grad():
            probs = [F.softmax(o["zw"].detach(), 1) for o in outs]
            onehot = F.one_hot(y, ctx.num_classes).float()
            chosen, targets = [], []
            for k in range(2):
                base = css[k][idx] | matched_high_confidence(probs[k], y, hp.tau)
                pred = F.one_hot(debiased_probs(outs[k]["zw"], self.priors[k], hp.debias_pl).argmax(1),
                                 ctx.num_classes).float()
                targets.append(torch.where(base[:, None], onehot, pred))
                chosen.append(base)
            if epoch > hp.epochs - 1 - hp.start_expand:
                (s1, p1), (s2, p2) = probs[0].max(1), probs[1].max(1)
                chosen = [label_guessing(c, s1, s2, p1 == p2, hp.tau, hp.threshold) for c in chosen]
        w = linear_rampup(epoch, 0, hp.rampup_length)
        beta = unchosen_weight(epoch, hp.rampup_length, hp.debias_pl)
        loss = sum(self.net_loss(k, nets[k], outs[k], xw, chosen[k], targets[k], w, beta) for k in range(2))
        ctx.step(loss, self.optimizer)
        with torch.no_grad():  # from this step's (pre-update) predictions, as the official
            for k in range(2):
                self.priors[k] = update_prior(self.priors[k], probs[k][chosen[k]], hp.bias_m)
                self.priors[2 + k] = update_prior(self.priors[2 + k], probs[k][~chosen[k]], hp.bias_m)
        self.chosen[idx] = chosen[0].float()
        return loss.detach()

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        ctx, hp = self.ctx, self.hp
        set_lr(self.optimizer, promix_lr(epoch, hp))
        if epoch < hp.warm_up:
            return {"loss": self.warmup()}
        rho = selection_rate(epoch, hp.rho_start, hp.rho_end, hp.rampup_length)
        css = (self.select(self.net1, rho), self.select(self.net2, rho))
        self.css.copy_(css[0])
        self.chosen.copy_(css[0].float())
        self.selected = True
        self.net1.train()
        self.net2.train()
        total, steps = torch.zeros((), device=ctx.device), 0
        for idx in ctx.batches(hp.batch_size, drop_last=len(ctx.train) >= hp.batch_size):
            total, steps = total + self.train_step(epoch, idx, css), steps + 1
        return {"loss": total / max(1, steps), "rho": rho, "chosen_fraction": self.chosen.mean(),
                "css_fraction": self.css.float().mean(),
                "unchosen_weight": unchosen_weight(epoch, hp.rampup_length, hp.debias_pl)}

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def clean_probability(self) -> torch.Tensor | None:
        """Net 1's chosen set of the epoch just run (CSS, with MHCS / LGA as each sample's batch added them);
        None during warm-up."""
        return self.chosen if self.selected else None

    def selection_sets(self) -> dict[str, torch.Tensor]:
        """Net 1's class-wise small-loss base set alone."""
        return {"css": self.css} if self.selected else {}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of both nets' primary-head logits."""
        return ensemble_logits([self.net1, self.net2], x) / 2
