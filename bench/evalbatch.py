"""The batch size of every evaluation-style pass, chosen by device in this one place.

An evaluation-style pass is a no-grad forward over a whole image set whose result does not depend on how it
is cut into batches (eval mode: batch-norm uses its running statistics): the engine's test / validation
accuracy, DivideMix's and GCE's per-sample losses, MOIT's kNN embeddings, TSSD's logits and features,
UNICON's and PES's softmax passes, the transition methods' probability passes. The batch only changes the
speed, so it is the harness's choice, not a hyperparameter: methods read it as ``ctx.eval_batch_size`` and
the shared components (``per_sample_loss``, ``predict_probs``) fall back to it. The trial option
``eval_batch_size`` overrides it everywhere.
"""
from __future__ import annotations

import torch

from .errors import LnlError

CUDA_BATCH = 1024  # large batches fill the GPU; memory is no concern for a no-grad CIFAR-size forward
CUDA_STREAMED_BATCH = 256  # a streamed batch is decoded by loader workers: smaller keeps them fed
CPU_BATCH = 64


def eval_batch_size(device: torch.device | str, override: int | None = None, streamed: bool = False) -> int:
    """The batch of a no-grad evaluation pass on ``device`` (``override``: the trial's ``eval_batch_size``).

    CUDA: 1,024 (256 for a streamed set, whose batches are decoded per batch by the loader workers).
    CPU: 64. Large CPU batches are slower, not faster (presumably their activations no longer fit the caches).
    Indicative micro-benchmark, 2026-12-02, on the loaded 2-core development VM (load average ≈ 8), one
    thread, a no-grad eval-mode forward over 2,048 random 32×32 images, 5 repeats interleaved in alternating
    batch order; seconds, best (median), script and all runs in docs/performance.md::

        batch                  32           64           128          256          512          1024
        cnn_small          0.48 (0.64)  0.54 (0.63)  1.00 (1.30)  1.25 (1.44)  1.99 (2.13)  2.48 (2.65)
        preact_rn18 w16    1.25 (1.34)  1.21 (1.36)  2.23 (2.40)  2.56 (2.66)  3.65 (3.84)  3.95 (4.52)

    32 and 64 tie (two more runs agreed); 64 halves the Python loop's iterations. The issue's measurement
    agrees: DivideMix's per-sample loss pass took 7.5 s per net at 1,024 against 2.5 s at 64–128.
    """
    if override is not None:
        if isinstance(override, bool) or int(override) < 1:
            raise LnlError(f"eval_batch_size must be a positive integer, got {override!r}")
        return int(override)
    if torch.device(device).type == "cuda":
        return CUDA_STREAMED_BATCH if streamed else CUDA_BATCH
    return CPU_BATCH
