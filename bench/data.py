"""Build a trial's data: load the dataset, take the subset, add the cached noise, hold out validation.

Returns a :class:`TrialData` that the engine keeps. Its ``clean`` and ``is_noisy`` arrays are the harness's
ground truth: the engine uses them to score, and never puts them in a method's context.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lnlbench.datasets.arrayfile import Preset, load_array_file
from lnlbench.types import DatasetInfo, DatasetLoader, DataSpec, default_data_root

from .config import ResolvedTrial
from .errors import LnlError
from .noisefile import NoiseRecord, noisy_labels_for
from .registry import DATASETS

# An array file under a name no loader knows: its own mean/std (or computed), crop padding of 1/8 of the
# image height (4 for 32×32, as CIFAR) and horizontal flips.
GENERIC = Preset(mean=None, std=None, crop_padding=lambda h: max(1, h // 8), flip=True)


@dataclass
class TrialData:
    info: DatasetInfo  # after the subset; y_train = clean labels (harness only)
    noisy: np.ndarray  # noisy labels of the training part (what the method trains on)
    clean: np.ndarray  # clean labels of the training part (harness only)
    is_noisy: np.ndarray  # harness only
    train_idx: np.ndarray  # positions in info of the training part
    val_idx: np.ndarray  # positions in info of the noisy validation part (may be empty)
    val_noisy: np.ndarray
    noise: NoiseRecord
    transition: np.ndarray
    score_noise: bool = True  # False where the clean train labels are unknown (Clothing1M)
    # The golden (trusted) set, positions in info and their clean labels: carved out of the training part
    # (never in ``train_idx`` unless the trial adds it back with clean labels, ``golden_use == "add"``).
    golden_idx: np.ndarray = field(default_factory=lambda: np.arange(0))
    golden_y: np.ndarray = field(default_factory=lambda: np.arange(0))


def load_dataset(name: str, data_root: str | None = None, data_file: str | None = None,
                 download: bool = False, options: dict | None = None, stream: bool | None = None) -> DatasetInfo:
    """Load a dataset by name (or an array file); ``options`` are its loader's data options, ``stream``
    the trial's streaming choice (a loader that can gives its file-backed form under True)."""
    root = Path(data_root).expanduser() if data_root else default_data_root()
    if data_file is not None and not Path(data_file).expanduser().exists():
        raise LnlError(f"data file {data_file} does not exist; check --data-file")
    spec = DataSpec(name=name, root=root, data_file=Path(data_file).expanduser() if data_file else None,
                    download=download, options=dict(options or {}), stream=stream)
    if name not in DATASETS and spec.data_file is not None:  # "bring your own dataset"
        return GENERIC.apply(load_array_file(spec.data_file, name, GENERIC), str(spec.data_file))
    return DATASETS.get(name)(spec)


TEST_SUBSET_SEED = 0x7E57


def stratified_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` random indices of each class (all of a class if it has fewer), sorted."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B5E7]))
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(idx if len(idx) <= per_class else rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def per_class(labels: np.ndarray, num_classes: int) -> list[int]:
    """Images per class (what result.json records as ``train_per_class`` / ``test_per_class``)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()


def warn_short_classes(labels: np.ndarray, asked: int, num_classes: int, option: str, part: str) -> None:
    """Warn (stderr) when a per-class subset asks for more images than a class has: all of it is kept."""
    counts = per_class(labels, num_classes)
    short = [(c, n) for c, n in enumerate(counts) if n < asked]
    if short:
        listed = ", ".join(f"{c} ({n})" for c, n in short[:5]) + (" ..." if len(short) > 5 else "")
        print(f"lnlbench: warning: {option} {asked} per class is more than {len(short)} {part} class(es) hold: "
              f"{listed}; all of each is used (result.json records the real counts per class)",
              file=sys.stderr)


def validation_split(noisy: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into (train, val), stratified by the *noisy* labels (the only ones a user has)."""
    if fraction <= 0:
        return np.arange(len(noisy)), np.arange(0)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A1]))
    val = []
    for c in np.unique(noisy):
        idx = np.flatnonzero(noisy == c)
        k = int(round(fraction * len(idx)))
        val.append(rng.choice(idx, k, replace=False))
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(noisy)), val_idx)
    return train_idx, val_idx


GOLDEN_SEED = 0x601D


def golden_split(clean: np.ndarray, candidates: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` positions of each class (by clean label) among ``candidates``, sorted.

    Seeded by the trial seed alone, never by the method, so every method of a grid cell that asks for the
    same number gets the same golden set (and the same noisy rest). A class with ``per_class`` or fewer
    candidates would give all of them away: a one-line error.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), GOLDEN_SEED]))
    labels = np.asarray(clean)[candidates]
    picks = []
    for c in np.unique(np.asarray(clean)):
        idx = candidates[labels == c]
        if len(idx) <= per_class:
            raise LnlError(f"golden_per_class {per_class} leaves no training image of class {c} "
                           f"({len(idx)} in the training part); ask for fewer than {len(idx)}")
        picks.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def intended_flip_rate(clean: np.ndarray, transition: np.ndarray) -> float:
    """The overall flip rate a noise generator meant: 1 − Σ_c π_c T_cc, π the class priors of the labels
    before noise. Asymmetric 0.4 on balanced CIFAR-10 (5 of 10 classes mapped) gives 0.2, symmetric 0.5 on 10
    classes (the true class drawable) 0.45. Protocol knowledge for a method's hint, never which sample is
    noisy; for real noise (an empirical matrix) it is the label set's noise rate."""
    t = np.asarray(transition, dtype=np.float64)
    priors = np.bincount(np.asarray(clean, dtype=np.int64), minlength=len(t)) / max(1, len(clean))
    return float(1.0 - priors @ np.diag(t))


def prepare(trial: ResolvedTrial, load: DatasetLoader | None = None) -> TrialData:
    """The trial's dataset (read by ``load``, default :func:`load_dataset`), subset, noisy labels (generated
    once, cached) and validation split."""
    cfg = trial.config
    extra = {} if cfg.stream is None else {"stream": cfg.stream}  # loaders written before streaming work
    info = (load or load_dataset)(cfg.dataset, cfg.data_root, cfg.data_file, cfg.download,
                                  trial.data_options or None, **extra)
    if info.file_backed and cfg.stream is False:
        raise LnlError(f"dataset '{cfg.dataset}' is read from its image files and cannot be held in memory "
                       "this way; drop --no-stream (or cap it with its data options)")
    if trial.subset is not None:
        warn_short_classes(info.y_train, trial.subset, info.num_classes, "subset", "training")
        info = info.select_train(stratified_subset(info.y_train, trial.subset, cfg.subset_seed))
    if trial.test_subset is not None:  # a fixed stratified part of the test set, the same for every trial
        warn_short_classes(info.y_test, trial.test_subset, info.num_classes, "test_subset", "test")
        info = info.select_test(stratified_subset(info.y_test, trial.test_subset, TEST_SUBSET_SEED))
    root = Path(cfg.data_root).expanduser() if cfg.data_root else default_data_root()
    noisy, record = noisy_labels_for(info, trial.noise_name, trial.noise_options, cfg.rate, cfg.seed, root)
    labels = np.asarray(noisy.labels, dtype=np.int64)
    train_idx, val_idx = validation_split(labels, cfg.val_fraction, cfg.seed)
    score = info.y_train_given_noisy is None or not np.array_equal(info.y_train, info.y_train_given_noisy)
    golden = np.arange(0)
    if trial.golden_per_class is not None and not score:
        raise LnlError(f"dataset '{cfg.dataset}' has no clean training labels to draw a golden set from; "
                       "drop golden_per_class")
    if trial.golden_per_class is not None:  # after the noise (the same noisy labels for every cell's method)
        golden = golden_split(info.y_train, train_idx, trial.golden_per_class, cfg.seed)
        if trial.golden_use == "add":  # the fair-comparison row: trains on them with their clean labels
            labels = labels.copy()
            labels[golden] = info.y_train[golden]
        else:
            train_idx = np.setdiff1d(train_idx, golden)
    return TrialData(info=info, noisy=labels[train_idx], clean=info.y_train[train_idx],
                     is_noisy=(labels != info.y_train)[train_idx], train_idx=train_idx, val_idx=val_idx,
                     val_noisy=labels[val_idx], noise=record, transition=np.asarray(noisy.transition),
                     score_noise=score, golden_idx=golden, golden_y=info.y_train[golden])
