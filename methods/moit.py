"""MOIT: Multi-Objective Interpolation Training (Ortego, Arazo, Albert, O'Connor, McGuinness —
"Multi-Objective Interpolation Training for Robustness to Label Noise", CVPR 2021, arXiv 2012.04462).

Official code ``github.com/DiegoOrtego/LabelNoiseMOIT`` at HEAD f36c3e7 ("Fix self-contrast"), read:
``utils_labelNoise/utils_noise.py`` (masks, ``InterpolatedContrastiveLearning_loss``,
``ClassificationLoss``, ``train_MOIT``, ``criterionMixBoot``, ``train_mixupBoot``, ``LabelNoiseDetection``),
``utils_labelNoise/xbm_memory.py``, ``utils_labelNoise/models/preact_resnet.py``,
``cifar10/train_MOIT.py``, ``cifar10/train_MOITplus.py``, ``cifar*/RunScripts_cifar_MOIT*.sh``;
../shared/reference/methods.md §4.

MOIT, per batch (two "complex"-augmented views x¹, x² and the un-augmented x⁰ of each image):
1. each view is mixed with its own permutation πᵥ and λᵥ ~ Beta(1, 1), λᵥ ← max(λᵥ, 1 − λᵥ);
2. interpolated contrastive loss (:func:`icl_loss`, τ 0.1) of the 2B unit-norm 128-d projections, on the
   batch and (from ``xbm_begin``) on a cross-batch memory of 2 × ``xbm_per_class`` × C rows that the batch
   is written into first; anchor i's positives are weighted λ (its other view, unsupervised; the other
   samples with its noisy label, supervised) and 1 − λ (both views of its partner πᵥ(i), and every sample
   with the partner's label — which counts the partner twice, as the official masks do), each group's
   log-probabilities averaged over its own positive count;
3. classification (:func:`moit_classification_loss`): mixup CE; from ``start_correction`` the samples
   detected noisy instead take the detached softmax of their x⁰ prediction as a soft label;
4. after the epoch, kNN detection on the projections of the train set under the test transform
   (:func:`lnlbench.components.knn.knn_detect`: k = 250, two votes, median class balance).
MOIT+ (``moit_plus``, MOIT continued in the same trial) is in :mod:`lnlbench.methods.moit_plus`.

Epochs here are 0-based; the official loops are 1-based with ``scheduler.step()`` BEFORE each epoch,
so its milestones 125/200 act from 0-based epochs 124/199, memory is used when ``epoch > 3`` (0-based ≥ 3)
and correction when ``epoch > 130`` (≥ 130).

Recipes (``PRESETS``): ``paper`` CIFAR-10/100 — one parametrisation for every noise (the README): PreAct
ResNet-18, SGD lr 0.1, momentum 0.9, wd 1e-4, batch 128, 250 epochs, τ 0.1, α 1, XBM from 3 with 100
per class, k 250, correction from 130. MOIT's own noise protocol is ``symmetric_exclusive`` and
``asymmetric:moit`` (published rows in results/published/moit.csv are tagged so). ``mini`` (CPU scale):
CE's mini optimiser/schedule/epochs (digits: MLP, 100 epochs, lr 0.05; CIFAR-10: ``MINI_CIFAR``), the
paper's phase points scaled to the run (correction at 52 % of it), k = 25 (digits) / 50 (CIFAR mini,
300 images per class), memory 10 / 25 per class.

Deviations:
- ``exclude_self`` (default False, the behaviour of the code the paper's numbers came from): before
  f36c3e7 the detection masked ``dist[r, r]`` of each 100-row batch, i.e. the true self only for the first
  100 samples and one unrelated column otherwise, so a sample's own label was in its vote; HEAD masks
  the true self (``exclude_self=True``). Ours includes self exactly (or excludes it exactly).
- Augmentation is batched on the device (:class:`lnlbench.components.augment.ComplexAugment`), colour
  ops in float without PIL's uint8 rounding. It follows the trial's protocol: when the trial does not
  augment (``MINI_CIFAR``), the two views are the un-augmented image (still mixed differently).
- Random numbers come from the trial's seeded generators (λ from ``ctx.rng``, permutations and shuffles
  from ``ctx.generator``, augmentation from ``ctx.aug_generator``), not numpy's/torch's global ones.
- Vote ties go to the lower class index, discrepancy ties to the lower sample index (unspecified there).
- ``clean_probability`` is 0.5·clean + 0.49·q + 0.005: above 0.5 exactly for the detected-clean samples,
  ranked within by the vote share q (so the AUC means something; a 0/1 mask would give balanced accuracy).
- Data-parallel: each rank's contrastive loss and memory use its own slice of the batch; the detection
  is rank 0's, broadcast.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lnlbench.components import sample_lambda
from lnlbench.components.augment import ComplexAugment
from lnlbench.components.knn import knn_detect
from lnlbench.components.projection import CrossBatchMemory, ProjectionNet
from lnlbench.contract import ComputeFloor, Method, MethodContext
from lnlbench.errors import LnlError
from lnlbench.hparams import DIGITS_MLP, MINI_CIFAR, TrainHparams, lr_at, make_sgd, set_lr
from lnlbench.registry import register_method
from lnlbench.search import SGD_SPACE


@dataclass(frozen=True)
class MOITHparams(TrainHparams):
    """MOIT's run scripts (identical for CIFAR-10/100, symmetric and asymmetric noise)."""

    model: str = "preact_resnet18"
    epochs: int = 250
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 1e-4
    schedule: str = "step"
    milestones: tuple[int, ...] = (124, 199)
    proj_dim: int = 128  # low_dim
    tau: float = 0.1  # batch_t
    alpha: float = 1.0  # mixup Beta(α, α)
    xbm_begin: int = 3  # memory loss from this 0-based epoch
    xbm_per_class: int = 100  # memory of 2 × this × C rows
    k_val: int = 250
    start_correction: int = 130  # 0-based epoch of the first semi-supervised epoch
    exclude_self: bool = False
    augmentation: str = "complex"  # complex (SimCLR-style) | simple (the dataset's crop/flip)


MOIT_PAPER = dict(model="preact_resnet18", epochs=250, batch_size=128, lr=0.1, weight_decay=1e-4, schedule="step",
              milestones=(124, 199), xbm_begin=3, xbm_per_class=100, k_val=250, start_correction=130)
MOIT_DIGITS = DIGITS_MLP | dict(augmentation="simple", k_val=25, xbm_per_class=10, xbm_begin=3, start_correction=52)
MOIT_MINI_CIFAR10 = MINI_CIFAR.with_hparams(k_val=50, xbm_per_class=25, xbm_begin=3, start_correction=13)
PRESETS = {"paper": {"cifar10": MOIT_PAPER, "cifar100": MOIT_PAPER},
           "mini": {"digits": MOIT_DIGITS, "cifar10": MOIT_MINI_CIFAR10}}


# -- the maths ---------------------------------------------------------------------------------------
def icl_loss(anchors: torch.Tensor, keys: torch.Tensor, lam: torch.Tensor, anchor_ids: torch.Tensor,
             partner_ids: torch.Tensor, anchor_labels: torch.Tensor, partner_labels: torch.Tensor,
             key_ids: torch.Tensor, key_labels: torch.Tensor, self_cols: torch.Tensor, tau: float) -> torch.Tensor:
    """Interpolated supervised contrastive loss of R anchors against K keys (the official masks).

    ``*_ids`` name the batch sample a row is a view of (−1: a memory row of no current sample);
    ``self_cols[r]`` is anchor r's own column among the keys. Positives of anchor r (its own column never):
    weight λ_r — keys of the same sample (unsupervised) and keys of other samples with r's label
    (supervised), averaged over their count; weight 1 − λ_r — keys of the partner sample and keys with
    the partner's label (the partner is in both sets), averaged over that count.
    """
    logits = anchors.float() @ keys.float().t() / tau
    not_self = torch.ones_like(logits, dtype=torch.bool)
    not_self[torch.arange(len(anchors), device=logits.device), self_cols] = False
    log_prob = logits - torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), 1, keepdim=True)
    same = key_ids[None, :] == anchor_ids[:, None]
    pos1 = ((same | ((key_labels[None, :] == anchor_labels[:, None]) & ~same)) & not_self).float()
    pos2 = ((key_ids[None, :] == partner_ids[:, None]) & not_self).float() + \
        ((key_labels[None, :] == partner_labels[:, None]) & not_self).float()
    term1 = (pos1 * log_prob).sum(1) / pos1.sum(1).clamp_min(1)
    term2 = (pos2 * log_prob).sum(1) / pos2.sum(1).clamp_min(1)
    return -(lam * term1 + (1 - lam) * term2).mean()


def moit_classification_loss(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor,
                             clean: torch.Tensor | None, p_plain: torch.Tensor | None) -> torch.Tensor:
    """Mixup CE over both views' 2B rows; with ``clean`` (0/1 per sample of the batch), ``ClassificationLoss``'s
    semi-supervised form: clean rows keep the labels, noisy ones take the detached softmax ``p_plain`` of
    their un-augmented view (and their partner's), each term averaged over all 2B rows."""
    y2 = torch.cat([y, y])
    ce_a = F.cross_entropy(logits.float(), y2, reduction="none")
    ce_b = F.cross_entropy(logits.float(), y[perm], reduction="none")
    if clean is None:
        return (lam * ce_a + (1 - lam) * ce_b).mean()
    a = torch.cat([clean, clean])
    logp = F.log_softmax(logits.float(), 1)
    z1, z2 = torch.cat([p_plain, p_plain]), p_plain[perm]
    labeled = (a * (lam * ce_a + (1 - lam) * ce_b)).mean()
    own = (lam * (1 - a) * -(z1 * logp).sum(1)).mean()
    partner = ((1 - lam) * (1 - clean[perm]) * -(z2 * logp).sum(1)).mean()
    return labeled + own + partner


def detection_score(clean: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """> 0.5 exactly for detected-clean samples, ordered within each side by the vote share q."""
    return 0.5 * clean.float() + 0.49 * q + 0.005


# -- the method --------------------------------------------------------------------------------------
@register_method("moit")
class MOIT(Method):
    """Interpolated contrastive learning, kNN label-noise detection, semi-supervised mixup CE (Ortego et al. 2021)."""

    Hparams = MOITHparams
    PRESETS = PRESETS
    # DiegoOrtego/LabelNoiseMOIT @f36c3e7 [code]: k = 250 in every run script of the repo's history
    # (cifar10/RunScripts_cifar_MOIT.sh L7, L15; cifar100/RunScripts_cifar_MOIT.sh L8, L16; the
    # train_MOIT.py L67 default 5 is never used); mixup α = 1.0 (train_MOIT.py L47 default, no script
    # overrides it). A k or α grid from the paper (its abstract cites hyperparameter studies): [gap], not
    # read. So k ∈ {50, 100, 250}, α ∈ {0.5, 1, 2} and lr/wd (SGD_SPACE) are our choice. MOIT+ inherits
    # it (its own fine-tuning stays).
    SEARCH_SPACE = {**SGD_SPACE, "k_val": ("choice", [50, 100, 250]), "alpha": ("choice", [0.5, 1.0, 2.0])}
    STATE_ATTRS = ("clean", "q", "detections")
    SMOKE = {"xbm_begin": 1, "start_correction": 1, "k_val": 10}
    # two mixed views trained, the un-augmented view forwarded; per epoch the kNN detection's projections of
    # the train set (train_MOIT.py runs LabelNoiseDetection after every epoch)
    COMPUTE_FLOOR = ComputeFloor(train=2, forward=1, epoch_forward=1)
    display_name = "MOIT"

    def __init__(self, hp: MOITHparams, ctx: MethodContext):
        super().__init__(hp, ctx)
        if hp.augmentation not in ("complex", "simple"):
            raise LnlError(f"moit: augmentation must be complex or simple, got '{hp.augmentation}'")
        if 2 * hp.xbm_per_class * ctx.num_classes < 2 * hp.batch_size:
            raise LnlError(f"moit: a memory of 2×{hp.xbm_per_class}×{ctx.num_classes} rows cannot hold a batch's "
                           f"2×{hp.batch_size} views; raise xbm_per_class or lower batch_size")
        backbone = ctx.make_model(hp.model, **hp.model_kwargs)
        self.model = ProjectionNet(backbone, hp.proj_dim, "moit").to(ctx.device)
        ctx.dist.broadcast_module_(self.model)
        self.optimizer = make_sgd(self.model.parameters(), hp)
        self.memory = CrossBatchMemory(2 * hp.xbm_per_class * ctx.num_classes, hp.proj_dim, ctx.device)
        n = len(ctx.train)
        self.clean = torch.ones(n, device=ctx.device)  # the last detection (1 clean, 0 noisy)
        self.q = torch.ones(n, device=ctx.device)
        self.detections = 0
        self._complex = ComplexAugment()

    # -- views ---------------------------------------------------------------------------------------
    def view(self, x: torch.Tensor) -> torch.Tensor:
        """One augmented view: complex (when the trial augments at all) or the dataset's own transform."""
        ctx = self.ctx
        if self.hp.augmentation == "complex" and ctx.augments:
            return ctx.normalize(self._complex(x, ctx.aug_generator))
        return ctx.augment(x)

    def _mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        perm = torch.randperm(x.shape[0], device=x.device, generator=self.ctx.generator)
        lam = sample_lambda(self.ctx.rng, self.hp.alpha, take_max=True)
        return lam * x + (1 - lam) * x[perm], perm, lam

    # -- one MOIT step -------------------------------------------------------------------------------
    def _icl(self, emb: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor,
             use_memory: bool) -> torch.Tensor:
        b = y.shape[0]
        ids = torch.arange(b, device=y.device).repeat(2)
        y2, yp = torch.cat([y, y]), y[perm]
        loss = icl_loss(emb, emb, lam, ids, perm, y2, yp, ids, y2, torch.arange(2 * b, device=y.device), self.hp.tau)
        self.memory.enqueue(emb.detach(), y2)  # the memory holds the current batch too (official order)
        if use_memory:
            feats, labels = self.memory.get()
            key_ids = torch.full((len(labels),), -1, dtype=torch.long, device=y.device)
            sl = self.memory.last_slice
            key_ids[sl] = ids
            self_cols = torch.arange(sl.start, sl.stop, device=y.device)
            loss = loss + icl_loss(emb, feats, lam, ids, perm, y2, yp, key_ids, labels, self_cols, self.hp.tau)
        return loss

    def _moit_step(self, idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx, hp = self.ctx, self.hp
        x, y = ctx.train.x[idx], ctx.train.y[idx]
        (m1, p1, l1), (m2, p2, l2) = self._mix(self.view(x)), self._mix(self.view(x))
        b = y.shape[0]
        lam = torch.cat([torch.full((b,), l1, device=y.device), torch.full((b,), l2, device=y.device)])
        with ctx.autocast():
            logits1, e1 = self.model.forward_both(m1)
            logits2, e2 = self.model.forward_both(m2)
            with torch.no_grad():  # the un-augmented view, in train mode as the official loop (BN stats)
                plain = self.model(ctx.normalize(x)).float()
        perm = torch.cat([p1, p2])  # rows of view 2 index their partners in view 2's own order
        correcting = epoch >= hp.start_correction and self.detections > 0
        cls = moit_classification_loss(torch.cat([logits1, logits2]), y, perm, lam,
                                       self.clean[idx] if correcting else None, F.softmax(plain, 1))
        icl = self._icl(torch.cat([e1, e2]), y, perm, lam, epoch >= hp.xbm_begin)
        ctx.step(icl + cls, self.optimizer)
        return icl.detach(), cls.detach()

    def _moit_epoch(self, epoch: int) -> dict:
        ctx, hp = self.ctx, self.hp
        set_lr(self.optimizer, lr_at(epoch, hp))
        self.model.train()
        sums, steps = torch.zeros(2, device=ctx.device), 0
        for idx in ctx.batches(hp.batch_size):
            icl, cls = self._moit_step(idx, epoch)
            sums += torch.stack([icl, cls])
            steps += 1
        t0 = self._clock()
        self.detect()
        detect_s = self._clock() - t0
        sums /= max(1, steps)
        phase = "ssl" if epoch >= hp.start_correction else "mixup-ce"
        return {"stage": "moit", "phase": phase, "contrastive_loss": sums[0], "ce_loss": sums[1],
                "loss": sums.sum(), "memory": epoch >= hp.xbm_begin, "detected_clean": self.clean.mean(),
                "detect_time_s": detect_s}

    def _clock(self) -> float:
        """Wall time after the device's queued work (once per epoch, to time the detection apart)."""
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        return time.perf_counter()

    # -- detection -----------------------------------------------------------------------------------
    @torch.no_grad()
    def embeddings(self) -> torch.Tensor:
        """Unit-norm projections of the whole train set under the test transform, eval mode."""
        ctx = self.ctx
        self.model.eval()
        out = torch.empty(len(ctx.train), self.hp.proj_dim, device=ctx.device)
        bs = ctx.eval_batch_size
        for s in range(0, len(ctx.train), bs):
            with ctx.autocast():
                out[s:s + bs] = self.model.embed(ctx.normalize(ctx.train.x[s:s + bs])).float()
        return out

    @torch.no_grad()
    def detect(self) -> None:
        det = knn_detect(self.embeddings(), self.ctx.train.y, self.ctx.num_classes, self.hp.k_val,
                         self.hp.exclude_self)
        self.clean.copy_(det["clean"].float())
        self.q.copy_(det["q"])
        self.ctx.broadcast_(self.clean)  # data-parallel ranks use rank 0's detection
        self.ctx.broadcast_(self.q)
        self.detections += 1

    def train_epoch(self, epoch: int) -> dict:
        return self._moit_epoch(epoch)

    def clean_probability(self) -> torch.Tensor | None:
        """The last detection (see :func:`detection_score`), None before the first."""
        return detection_score(self.clean, self.q) if self.detections > 0 else None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)
