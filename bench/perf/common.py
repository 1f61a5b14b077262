"""What every ``lnlbench perf`` measurement shares: sizes, synthetic data, trial configs, timing helpers."""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lnlbench.config import TrialConfig
from lnlbench.datasets.cifar import CIFAR10_CLASSES
from lnlbench.registry import METHODS

SCHEMA = "lnlbench.perf/1"
TARGETS = {"engine_overhead": 1.10, "augmentation": 20.0, "grid_packing": 1.15, "compute_floor": 1.15}



def smoke_overrides(method: str) -> dict[str, Any]:
    """The method's own small overrides that reach its main phase quickly (its ``SMOKE``; the contract
    tests read the same), so the timed epochs are the method's main phase, not a warm-up."""
    return dict(getattr(METHODS.get(method), "SMOKE", {}))


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: :data:`QUICK`, :data:`FULL` (tests use smaller ones)."""

    mode: str
    model: str = "cnn_small"
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"widths": [8, 16, 32]})
    n_train: int = 512  # engine overhead: training images
    n_test: int = 256
    batch_size: int = 128
    pairs: int = 2  # timed engine/bare epoch pairs, after one untimed pair
    n_aug: int = 2048
    aug_reps: int = 2
    n_method: int = 256  # method cost: training images
    method_reps: int = 1  # timed epochs per method, after one untimed epoch
    grid_trials: int = 4
    grid_slots: int = 2
    grid_trial_s: float = 3.0  # aimed length of each grid trial (calibrated epochs)
    n_memory: int = 256
    n_stream: int = 2048  # streaming: CIFAR-sized images streamed vs on the device
    n_jpeg: int = 64  # streaming: 224-px JPEG files decoded per timed pass
    stream_reps: int = 1
    n_official: int = 1000  # --compare-official: training images on both sides


QUICK = Sizes("quick", pairs=4, n_aug=4096, aug_reps=3, n_method=512, method_reps=3, grid_trial_s=2.0,
              n_stream=4096, n_jpeg=256, stream_reps=3, n_official=2000)
FULL = Sizes("full", n_train=10000, n_test=2000, pairs=4, n_aug=10000, aug_reps=3, n_method=2000,
             method_reps=2, grid_trials=4, grid_trial_s=30.0, n_memory=2000, n_stream=20000, n_jpeg=2000,
             stream_reps=3, n_official=10000)


# -- data, trials, timing --------------------------------------------------------------------------------
def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 images, 60 % a fixed random template of their class + 40 % noise, and labels."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, (10, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x = 0.6 * templates[y] + 0.4 * rng.integers(0, 256, (n, 32, 32, 3)).astype(np.float32)
    return x.astype(np.uint8), y


def synthetic_cifar(path: Path, n_train: int, n_test: int) -> Path:
    """A CIFAR-10-shaped array file (see ``datasets/arrayfile.py``) of synthetic images."""
    if not path.exists():
        x, y = synthetic_images(n_train + n_test, seed=n_train)
        np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:],
                 classes=np.array(CIFAR10_CLASSES))
    return path


def trial_config(work: Path, sizes: Sizes, method: str, device: str, n_train: int, tag: str,
                 hparams: dict[str, Any] | None = None, epochs: int | None = None) -> TrialConfig:
    """``method``'s paper CIFAR-10 recipe on synthetic data with the perf network, 40 % symmetric noise."""
    data = synthetic_cifar(work / f"cifar_{n_train}.npz", n_train, sizes.n_test)
    hp = {"model": sizes.model, "model_kwargs": dict(sizes.model_kwargs), **smoke_overrides(method),
          **(hparams or {})}
    # a method on a golden set gets one of 1 % of the images per class (its recipe's 100 per class would
    # not fit the small synthetic sets; the cost of a golden set grows with the train set, not with G)
    golden = max(1, n_train // 1000) if getattr(METHODS.get(method), "uses_clean_data", False) else None
    return TrialConfig(method=method, dataset="cifar10", data_file=str(data), data_root=str(work / "data"),
                       noise="symmetric", rate=0.4, seed=0, preset="paper", epochs=epochs, hparams=hp,
                       out_dir=str(work / "trials" / tag), device=device, golden_per_class=golden)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn`` takes, the device synchronised on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def host_values(logs: dict[str, Any] | None) -> dict[str, Any]:
    """A method's epoch logs as plain numbers (the one host sync per epoch the engine also does)."""
    return {k: float(v) if isinstance(v, (torch.Tensor, np.generic)) else v for k, v in (logs or {}).items()}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def median(values: list[float]) -> float:
    return float(statistics.median(values))
