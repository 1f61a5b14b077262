"""TSSD: Two-Stream Sample Distillation with a golden clean set, reconstructed on the DivideMix loop.

Bai, Zhou, Qin, Wang, Zheng, "Robust Noisy Label Learning via Two-Stream Sample Distillation", IEEE TMM
2025 (arXiv 2404.10499). No code is public and only the paper's opening and summaries could be read
(../shared/reference/car-tssd-mlnt.md §2, methods.md §5): this is a RECONSTRUCTION. What is verified [src]:
Parallel Sample Division (PSD) builds a certain set of reliable positive (clean) and negative (noisy)
samples from "the sample structure in feature space and the human prior in loss space" with GMMs, the rest
uncertain; Meta Sample Purification (MSP) "trains a meta-classifier on golden data" to mine "semi-hard"
samples from the uncertain set into the certain one; the SSL stage treats the certain set as labelled and
the uncertain one as unlabelled, "refined labels", MixMatch-like losses, L = L_C + λ_u·L_U + λ_r·L_reg; the
division is redone "in every iteration". Each part below says where it comes from.

Per net, each epoch after ``warm_up`` epochs of CE on the noisy train set plus the golden set G:
1. Loss stream (DivideMix, verified as "the small-loss prior"): per-sample CE in eval mode on the test
   transform, min-max normalised, 2-component GMM; w_loss = posterior of the low-mean component.
2. Feature stream (the first author's PSDC, arXiv 2404.01853, very likely PSD's feature space [inference]):
   per noisy class, the row means a_i of the cosine-similarity matrix of the L2-normalised penultimate
   features (diagonal excluded), min-max normalised within the class, a GMM; w_feat = posterior of the
   high-mean component. Computed exactly from the class sums (``components.division``): no n_c × n_c
   matrix, peak extra memory the (N, d) features plus (C, d) sums (CIFAR-10, d = 512: 100 MB fp32).
3. PSD (the agreement rule is our choice, the proposal's): P = both > τ_c, Q = both < 1 − τ_c, U = rest,
   τ_c = ``p_threshold`` (0.5; 0.6 at 90 % noise, DivideMix's).
4. MSP (design ours): a 2-layer MLP (``components.metaclf``) fitted afresh per net and epoch on G ONLY —
   each golden image with its true label (clean) and two wrong ones (noisy: a random other class and the
   net's most probable wrong class) — on six label-dependent meta-features: the normalised loss (the loss
   stream's input), p(ỹ), max p, the margin p(ỹ) − max other, the normalised entropy and the normalised
   class similarity (the feature stream's input). Why these: they are defined for any (image, label) pair,
   so golden pairs with true and flipped labels describe the same space as noisy training pairs, and the
   GMM posteriors are monotone in two of them. The proposal also fed P → clean and Q → noisy to the meta
   classifier; the issue asks for golden data only (the certain sets hold the streams' own errors), so not.
   Mined positives = U with meta score s > ``meta_threshold`` (0.5).
5. SSL stage (DivideMix's, reused: ``DivideMix._train_sets``): labelled X = P ∪ mined ∪ G with clean weights
   w = w_loss for P (DivideMix's label co-refinement: the "refined labels"), s for mined samples, 1 for G;
   unlabelled = Q ∪ (U \\ mined); L_C = soft CE on the mixed labelled part, L_U = MSE with DivideMix's λ_u
   ramp, L_reg = the uniform-prior KL (λ_r = 1). Two networks with co-divide (each trains on the other's
   division; kept from DivideMix, uncertain for TSSD). 6. Test: the sum of both nets' logits.

Golden set: the trial's ``golden_per_class`` (``ctx.golden``, carved out of the training set by the engine,
recorded in result.json, flagged in every table). Recipes: ``paper`` = DivideMix's CIFAR-10/100 tables
(PreAct ResNet-18, 301 epochs, Table 7's λ_u and τ) with G = 100 per class on CIFAR-10 and 10 per class on
CIFAR-100 (1,000 images, the meta-reweighting convention; the paper's size is not known); ``mini`` =
DivideMix's ``mini`` recipes with G = 10 per class (the issue's validation setting).

``clean_probability()``: the distilled labelled set net 1 trained on (net 2's division): 0.5 + c/2 for
samples in P ∪ mined, c/2 for the rest, c = (w_loss + w_feat)/2, so "selected" (> 0.5) is exactly the
distilled set and the AUC ranks by both streams. ``selection_sets()``: ``certain`` (P) and ``mined``,
which the harness scores separately into the history.

Deviations (from the paper, as far as known, and from the reconstruction proposal): everything in 3–4 is
our design; the meta classifier sees golden data only (the proposal added P and Q); P keeps DivideMix's
posterior weights (the proposal: w = 1); no Clothing1M / Tiny-ImageNet recipe (no golden source wired in;
a cell without a recipe gets ``golden_default`` = 10 per class and DivideMix's defaults); randomness from
the trial's seeded generators, as DivideMix. Memory: the train images are copied once with G appended
(CIFAR-10: 150 MB uint8), and each division holds the (N, C) logits and (N, d) features of one pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench import evalbatch
from lnlbench.components import ensemble_logits, gmm_clean_probability, linear_rampup, require_features
from lnlbench.components.division import class_mean_similarity, feature_clean_probability, parallel_division
from lnlbench.components.metaclf import fit_meta_classifier, golden_negatives, meta_features
from lnlbench.components.selection import minmax
from lnlbench.contract import ComputeFloor, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import Recipe, lr_at, set_lr
from lnlbench.registry import register_method
from lnlbench.search import SGD_SPACE

from .dividemix import PRESETS as DM_PRESETS
from .dividemix import DivideMix, DivideMixHparams


@dataclass(frozen=True)
class TSSDHparams(DivideMixHparams):
    """DivideMix's CIFAR defaults plus the meta classifier's (ours; the paper's are not known)."""

    meta_threshold: float = 0.5  # mined: uncertain samples the meta classifier scores above this
    meta_hidden: int = 32
    meta_steps: int = 200  # full-batch Adam steps per fit (a fresh fit per net and epoch)
    meta_lr: float = 1e-2


def _with_golden(entry, per_class: int) -> Recipe:
    recipe = entry if isinstance(entry, Recipe) else Recipe(dict(entry))
    return recipe.with_protocol(golden_per_class=per_class)


_GOLDEN = {"paper": {"cifar10": 100, "cifar100": 10}, "mini": {"digits": 10, "cifar10": 10}}
PRESETS = {
    preset: {key: _with_golden(entry, _GOLDEN[preset][key]) if key in _GOLDEN[preset] else entry
             for key, entry in DM_PRESETS[preset].items() if key.partition("/")[0] in _GOLDEN[preset]}
    for preset in ("paper", "mini")
}


@torch.no_grad()
def logits_and_features(net: torch.nn.Module, x: torch.Tensor, normalize, autocast,
                        batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, penultimate features) of every image under the test transform, net in eval mode."""
    logits, feats = [], []
    batch_size = batch_size or evalbatch.eval_batch_size(x.device)  # methods pass ctx.eval_batch_size
    for s in range(0, len(x), batch_size):
        with autocast():
            f = net.forward_features(normalize(x[s:s + batch_size]))
            logits.append(net.head(f).float())
        feats.append(f.float())
    return torch.cat(logits), torch.cat(feats)


def class_similarity(feats: torch.Tensor, labels: torch.Tensor, ref: torch.Tensor, ref_y: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """Mean cosine similarity of each feature to the training samples (``ref``) of its label's class."""
    u, r = F.normalize(feats.float(), dim=1), F.normalize(ref.float(), dim=1)
    sums = torch.zeros(num_classes, r.shape[1], device=r.device).index_add_(0, ref_y, r)
    counts = torch.bincount(ref_y, minlength=num_classes).float().clamp_min(1)
    return (u * sums[labels]).sum(1) / counts[labels]


def class_minmax(v: torch.Tensor, y: torch.Tensor, ref: torch.Tensor, ref_y: torch.Tensor,
                 num_classes: int) -> torch.Tensor:
    """v normalised by the min and max of ``ref`` within each class (the feature stream's normalisation)."""
    big = torch.finfo(torch.float32).max
    lo = torch.full((num_classes,), big, device=v.device).scatter_reduce(0, ref_y, ref, "amin")
    hi = torch.full((num_classes,), -big, device=v.device).scatter_reduce(0, ref_y, ref, "amax")
    lo, hi = lo[y], hi[y]
    return torch.where(hi > lo, (v - lo) / (hi - lo).clamp_min(1e-12), torch.full_like(v, 0.5))


@register_method("tssd")
class TSSD(DivideMix):
    """DivideMix's two-net MixMatch loop on TSSD's two-stream, meta-purified division and a golden set."""

    display_name = "TSSD"
    Hparams = TSSDHparams
    PRESETS = PRESETS
    # DivideMix's Table 7 grid for λ_u and τ (TSSD trains DivideMix's SSL stage); the meta classifier's
    # threshold has no published value (ours); lr/wd: ours (SGD_SPACE).
    SEARCH_SPACE = {**SGD_SPACE, "lambda_u": ("choice", [0.0, 25.0, 150.0]),
                    "p_threshold": ("choice", [0.5, 0.6]), "meta_threshold": ("choice", [0.3, 0.5, 0.7])}
    SMOKE = {"warm_up": 1}  # PSD + MSP + the SSL stage from the second epoch
    # DivideMix's SSL step (_train_sets) and one division per net
    COMPUTE_FLOOR = ComputeFloor(train=4, forward=6, epoch_forward=2)
    WAITING = {}
    uses_clean_data = True
    golden_default = 10  # where the recipe has no size: 10 per class (CIFAR-100's, Tiny-ImageNet's convention)
    reconstructed = True
    reconstruction = ("no public code; PSD, MSP and the SSL stage from the abstract and summaries, the "
                      "feature stream from the author's PSDC, the agreement rule, meta classifier and "
                      "golden sizes ours, on DivideMix's loop")

    def __init__(self, hp: TSSDHparams, ctx: MethodContext):
        if ctx.golden is None or len(ctx.golden) == 0:
            raise LnlError("tssd needs a golden set in its context; run it with --golden-per-class N")
        if hp.num_samples or hp.loss_history > 1:
            raise LnlError("tssd divides the whole train set each epoch: use num_samples=0, loss_history=1")
        super().__init__(hp, ctx)
        require_features(self.net1, "tssd", hp.model)
        self.n_train = len(ctx.train)
        # the pool the epoch trains on: the noisy set, then G with its clean labels (always labelled, w = 1)
        self.data_x = torch.cat([ctx.train.x, ctx.golden.x])
        self.data_y = torch.cat([ctx.train.y, ctx.golden.y])
        self.division: dict[str, torch.Tensor] | None = None  # the one net 1 trained on in the epoch just run

    # -- Parallel Sample Division + Meta Sample Purification ---------------------------------------------
    def _seed(self) -> int:
        return int(self.ctx.rng.integers(2**31))

    @torch.no_grad()
    def _divide_tssd(self, net: torch.nn.Module) -> dict[str, torch.Tensor]:
        ctx, hp, n = self.ctx, self.hp, self.n_train
        y, c = ctx.train.y, ctx.num_classes
        net.eval()
        logits, feats = logits_and_features(net, ctx.train.x, ctx.normalize, ctx.autocast, ctx.eval_batch_size)
        loss = ctx.broadcast_(F.cross_entropy(logits, y, reduction="none"))  # ranks divide alike (rank 0's)
        w_loss = torch.from_numpy(gmm_clean_probability(minmax(loss), seed=self._seed())).float().to(y.device)
        sim = ctx.broadcast_(class_mean_similarity(feats, y, c))
        w_feat = feature_clean_probability(sim, y, c, self._seed)
        certain, noisy, uncertain = parallel_division(w_loss, w_feat, hp.p_threshold)
        # MSP: the meta classifier's training rows come from the golden images only
        g_logits, g_feats = logits_and_features(net, ctx.golden.x, ctx.normalize, ctx.autocast,
                                                 ctx.eval_batch_size)
        clf = self._fit_meta(g_logits, g_feats, feats, loss, sim)
        rng_loss = (loss.min(), loss.max())
        u_feat = meta_features(logits, y, class_minmax(sim, y, sim, y, c), rng_loss)
        score = ctx.broadcast_(clf.score(u_feat))
        mined = uncertain & (score > hp.meta_threshold)
        idx = torch.arange(n, device=y.device)
        golden = torch.arange(n, n + len(ctx.golden), device=y.device)
        lab = torch.cat([idx[certain], idx[mined], golden])
        w = torch.cat([w_loss[certain], score[mined], torch.ones(len(golden), device=y.device)])
        both = (w_loss + w_feat) / 2
        prob = torch.where(certain | mined, 0.5 + both / 2, both / 2)
        return {"lab": lab, "w": w, "unl": idx[~(certain | mined)], "certain": certain, "noisy": noisy,
                "mined": mined, "prob": prob}

    def _fit_meta(self, g_logits: torch.Tensor, g_feats: torch.Tensor, feats: torch.Tensor,
                  loss: torch.Tensor, sim: torch.Tensor):
        """The meta classifier, fitted on G's images under their true label (clean) and two wrong ones."""
        ctx, hp = self.ctx, self.hp
        y, gy, c = ctx.train.y, ctx.golden.y, ctx.num_classes
        labels = torch.cat([gy, golden_negatives(g_logits, gy, ctx.generator)])
        reps = len(labels) // len(gy)
        lg, fg = g_logits.repeat(reps, 1), g_feats.repeat(reps, 1)
        gsim = class_minmax(class_similarity(fg, labels, feats, y, c), labels, sim, y, c)
        x = meta_features(lg, labels, gsim, (loss.min(), loss.max()))
        target = torch.cat([torch.ones(len(gy)), torch.zeros(len(labels) - len(gy))]).to(x.device)
        return fit_meta_classifier(x, target, ctx.generator, hp.meta_hidden, hp.meta_steps, hp.meta_lr)

    # -- the contract -----------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, torch.Tensor | float]:
        hp = self.hp
        lr = lr_at(epoch, hp)
        set_lr(self.opt1, lr)
        set_lr(self.opt2, lr)
        if epoch < hp.warm_up:
            self.division = None
            return {"loss": (self._warmup(self.net1, self.opt1) + self._warmup(self.net2, self.opt2)) / 2}
        div1, div2 = self._divide_tssd(self.net1), self._divide_tssd(self.net2)
        self.division = div2
        sets = lambda d: (d["lab"], d["w"], d["unl"])
        lx1, lu1, n1 = self._train_sets(epoch, self.net1, self.net2, self.opt1, *sets(div2))  # co-divide
        lx2, lu2, n2 = self._train_sets(epoch, self.net2, self.net1, self.opt2, *sets(div1))
        frac = lambda k: (div1[k].float().mean() + div2[k].float().mean()) / 2
        return {"lx": (lx1 + lx2) / 2, "lu": (lu1 + lu2) / 2, "labeled_1": n1, "labeled_2": n2,
                "certain_clean": frac("certain"), "certain_noisy": frac("noisy"), "mined": frac("mined"),
                "lambda_u": hp.lambda_u * linear_rampup(epoch, hp.warm_up, hp.rampup_length)}

    def clean_probability(self) -> torch.Tensor | None:
        return None if self.division is None else self.division["prob"]

    def selection_sets(self) -> dict[str, torch.Tensor]:
        d = self.division
        return {} if d is None else {"certain": d["certain"], "mined": d["mined"]}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_logits([self.net1, self.net2], x)
