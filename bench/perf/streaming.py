"""Measurement 6 of ``lnlbench perf``: the streaming data path's throughput (``lnlbench.stream``).

a. **CIFAR-10-sized**: images per second through the training transform when the set lives on the device
   (index + batched crop/flip/normalise) against streaming it from host memory (DataLoader workers gather
   each batch, pinned, moved to the device, then the same transform), on the same synthetic 32-px images,
   batch size and order. Passes alternate so background load hits both alike; the ratio is of medians.
b. **224-px JPEGs**: images per second decoded from JPEG files (320×256, PIL), resized to the 256 canvas,
   moved and cropped to 224 on the device, with one DataLoader worker and with one per available core: the
   per-worker figure sizes ``cpus_per_worker`` for a GPU (workers × per-worker img/s ≥ the GPU's step rate).

Every timed pass starts its DataLoader's workers, as every epoch's pass does in a trial.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lnlbench.datasets.augment import Augmenter
from lnlbench.datasets.cifar import CIFAR10
from lnlbench.engine import pick_device
from lnlbench.stream import StreamedImages
from lnlbench.types import ImageFiles

from .common import Sizes, cores, median, synthetic_images, timed

JPEG_SIZE = (320, 256)  # (width, height) of the written files: a 5:4 photo, short side 256


def write_jpegs(folder: Path, n: int) -> np.ndarray:
    """``n`` JPEG files (quality 90) of smooth random colour fields with noise, as photos compress."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    w, h = JPEG_SIZE
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, (h // 16, w // 16, 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        noisy = np.clip(np.asarray(img, np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(str(folder / f"{i:05d}.jpg"))
        Image.fromarray(noisy).save(paths[-1], quality=90)
    return np.array(paths)


def _pass(images: StreamedImages, augment: Augmenter, bs: int, gen: torch.Generator) -> None:
    order = torch.randperm(len(images), device=images.device, generator=gen)
    for b in images.planned(list(order.split(bs))):
        augment(images[b], gen)


def cifar_sized(sizes: Sizes, dev: torch.device) -> dict[str, Any]:
    x, _ = synthetic_images(sizes.n_stream, seed=11)
    n, bs, workers = len(x), sizes.batch_size, cores()
    augment = Augmenter.build(CIFAR10.mean, CIFAR10.std, 4, True, dev, channels_last=dev.type == "cuda")
    on_dev = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(dev)
    streamed = StreamedImages.of(x, dev, workers)
    gen = torch.Generator(device=dev).manual_seed(0)

    def device_pass() -> None:
        order = torch.randperm(n, device=dev, generator=gen)
        for s in range(0, n, bs):
            augment(on_dev[order[s:s + bs]], gen)

    t: dict[str, list[float]] = {"device": [], "stream": []}
    for rep in range(sizes.stream_reps + 1):  # rep 0 (first-call costs) is dropped
        for name, fn in (("device", device_pass), ("stream", lambda: _pass(streamed, augment, bs, gen)))[
                ::1 if rep % 2 == 0 else -1]:
            t[name].append(timed(fn, dev))
    t = {k: v[1:] for k, v in t.items()}
    dev_ips, stream_ips = n / median(t["device"]), n / median(t["stream"])
    return {"ratio": stream_ips / dev_ips, "device_img_s": dev_ips, "stream_img_s": stream_ips,
            "num_workers": workers, "n_images": n, "batch_size": bs, "samples": t}


def jpeg_224(work: Path, sizes: Sizes, dev: torch.device) -> dict[str, Any]:
    files = ImageFiles(write_jpegs(work / "jpeg", sizes.n_jpeg), 256)
    augment = Augmenter.build(CIFAR10.mean, CIFAR10.std, 0, True, dev, channels_last=dev.type == "cuda", crop=224)
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []
    for k in sorted({1, cores()}):
        images = StreamedImages.of(files, dev, k)
        secs = median([timed(lambda im=images: _pass(im, augment, 32, gen), dev) for _ in range(sizes.stream_reps)])
        rows.append({"workers": k, "img_s": sizes.n_jpeg / secs, "per_worker_img_s": sizes.n_jpeg / secs / k})
    return {"rows": rows, "n_images": sizes.n_jpeg, "batch_size": 32, "file_size": list(JPEG_SIZE),
            "canvas": 256, "crop": 224}


def streaming(work: Path, sizes: Sizes, device: str) -> dict[str, Any]:
    """Both figures: streamed vs on-device images/s (32 px), and 224-px JPEG images/s per worker."""
    dev = pick_device(device)
    c = cifar_sized(sizes, dev)
    return {**c, "device": str(dev), "jpeg": jpeg_224(work, sizes, dev)}
