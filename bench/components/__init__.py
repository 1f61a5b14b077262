"""Shared mechanics that methods use as parts (never as base classes).

- :mod:`.mixing`: mixup, FMix (ProMix), MixMatch mixing over a whole concatenated batch, sharpening, soft
  cross-entropy
- :mod:`.selection`: per-sample loss over the train set, GMM clean/noisy split, small-loss selection (whole set or
  per class)
- :mod:`.ema`: exponential moving average (mean-teacher) weights
- :mod:`.ramps`: warm-up and ramp-up schedules (linear, sigmoid, Co-teaching's forget rate)
- :mod:`.clipping`: an optimiser step with gradient-norm clipping (SCE's reference code clips at 5)
- :mod:`.fastweights`: functional fast-weight steps (batched inner gradients, vmapped fast forwards)
- :mod:`.cotrain`: two-network helpers (ensemble prediction; the forget-rate source, Adam plan, small-loss
  exchange and disagreement set that Co-teaching, Co-teaching+ and JoCoR share)
- :mod:`.heads`: an extra head beside the classifier on a backbone's pooled features (CAR, MOIT)
- :mod:`.layerwise`: a network's ordered stages, re-initialising the last ones, training only some (PES)
- :mod:`.transition`: class-transition matrices: the anchor-point estimator, forward/backward corrected and
  importance-reweighted losses, a method's own noisy hold-out split (Forward, Backward, T-Revision)
- :mod:`.knn`, :mod:`.projection`, :mod:`.augment`: MOIT's kNN detection, projection head and memory, batched SimCLR-style views
- :mod:`.autoaugment`: batched PIL-equivalent strong augmentation (AutoAugment's CIFAR-10 policy as SOP+'s and
  UNICON's code read it, DISC's and ProMix's (FixMatch's) RandAugment pools, Cutout): SOP+, UNICON, DISC,
  ProMix
"""
from .clipping import clipped_step
from .cotrain import ensemble_logits
from .ema import ModelEMA
from .heads import AuxHeadNet, require_features
from .mixing import mix, mixmatch, mixup, sample_lambda, sharpen, soft_cross_entropy
from .ramps import forget_rate_schedule, linear_rampup, sigmoid_rampup
from .selection import gmm_clean_probability, per_class_lowest, per_sample_loss, small_loss_mask

__all__ = ["AuxHeadNet", "ModelEMA", "clipped_step", "ensemble_logits", "forget_rate_schedule", "gmm_clean_probability",
           "linear_rampup", "mix", "mixmatch", "mixup", "per_class_lowest", "per_sample_loss", "sample_lambda", "sharpen",
           "require_features", "sigmoid_rampup", "small_loss_mask", "soft_cross_entropy"]
