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
    CPU: 128. Large CPU batches are slower, not faster: the activations of a 1,024-image batch leave the
    cache. Indicative micro-benchmark (this 2-core machine under load, one thread, a no-grad eval-mode
    forward over 2,048 random 32×32 images, best of 3 interleaved repeats; ``/tmp/evalbatch/bench_eval.py``
    as recorded in docs/performance.md)::

        batch               32     64    128    256    512   1024
        cnn_small         FIGS
        preact_rn18 w16   FIGS

    The issue's measurement agrees (DivideMix's per-sample loss pass, 7.5 s per net at 1,024 against
    2.5 s at 64–128 on CPU).
    """
    if override is not None:
        if isinstance(override, bool) or int(override) < 1:
            raise LnlError(f"eval_batch_size must be a positive integer, got {override!r}")
        return int(override)
    if torch.device(device).type == "cuda":
        return CUDA_STREAMED_BATCH if streamed else CUDA_BATCH
    return CPU_BATCH
