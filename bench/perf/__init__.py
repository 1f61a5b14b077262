"""``lnlbench perf``: six performance figures, each a ratio of two things measured side by side in one process.

1. **engine overhead**: CE epochs through the engine's trial path (``run_trial``:
   ``MethodContext.batches/augment/step``) against a bare hand-written PyTorch loop on the same model,
   noisy labels on the device, batch size and batched augmentation. Epochs alternate (engine, bare, bare,
   engine, ...) so background load hits both alike; the ratio is the median of the per-pair ratios. Setup
   is not timed. The engine's per-epoch bookkeeping (test evaluation, checkpoint, result.json) is timed apart.
2. **augmentation**: the engine's on-device batched crop + flip + normalise
   (:class:`lnlbench.datasets.augment.Augmenter`) against torchvision's PIL transforms in a DataLoader with
   one worker per available core, on the same images and batch size.
3. **method cost**: a post-warm-up epoch of every registered method against CE, same data, network and
   device; each method keeps its ``paper`` CIFAR-10 recipe (batch size, optimiser, augmentation) except
   the network, with the method's own ``SMOKE`` overrides (which end warm-ups early).
4. **grid packing**: N equal trials on k slots through the Ray runner: wall time ÷ (Σ trial time ÷ k), and
   the executor's overhead per trial (everything but the engine's epochs: actor start, data, Tune).
5. **memory**: peak host RSS and peak device memory of one short trial per method, each trial in a fresh
   process (so peaks do not mix).
6. **streaming**: the streaming data path's images/s against the on-device path on CIFAR-sized images, and
   224-px JPEG decoding images/s per DataLoader worker (:mod:`.streaming`), to size ``cpus_per_worker``.

The package: :mod:`.common` (sizes, synthetic data, timing), :mod:`.inprocess` (1-3), :mod:`.trials` (4
and 5, whole trials in Ray or fresh processes; Ray only through :mod:`lnlbench.runner`), :mod:`.streaming`
(6), :mod:`.official` + :mod:`.official_runner` (``--compare-official``: the official DivideMix beside ours,
in a child process), :mod:`.run`
(:func:`run_perf`), :mod:`.report` (the text report). Each imports only those before it: no circle.

Data are synthetic CIFAR-shaped uint8 images (a colour template per class plus noise; nothing is
downloaded) written to a temporary folder and served as ``cifar10`` from an array file.
"""
from .common import FULL, QUICK, SCHEMA, TARGETS, Sizes
from .run import run_perf

__all__ = ["FULL", "QUICK", "SCHEMA", "TARGETS", "Sizes", "run_perf"]
