"""Real (human) label noise: CIFAR-10N / CIFAR-100N and noisy labels shipped with a dataset.

CIFAR-N (Wei et al., ICLR 2022; github ``UCSC-REAL/cifar-10-100n``, ``data/``) publishes
``CIFAR-10_human.pt`` (int64 arrays ``clean_label``, ``aggre_label``, ``worse_label``,
``random_label1..3``) and ``CIFAR-100_human.pt`` (``clean_label``, ``noisy_label`` arrays, coarse labels as
python lists), indexed by the original python-version/torchvision training order. The repo's README loads
them with a plain ``torch.load``; here they are loaded with ``weights_only=True`` and only numpy's array
reconstruction allow-listed, so a tampered file cannot run code. ``.npz`` copies with the same keys
(``cifar10n_labels.npz`` / ``cifar100n_labels.npz``) load with ``allow_pickle=False``.

The label set fixes the noise, so ``rate`` must be 0 and ``rng`` is unused. The transition returned is the
empirical clean→noisy matrix of the selected samples.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lnlbench.errors import LnlError
from lnlbench.registry import register_noise
from lnlbench.types import NoiseInfo, NoisyLabels

from .arrayfile import check_npz
from .noise import empirical_transition, noisy_result, read_options, validate_inputs

REPO_HINT = "github.com/UCSC-REAL/cifar-10-100n (folder data/)"


@dataclass(frozen=True)
class _CifarN:
    """One CIFAR-N release: its files and its label sets (option value → array key)."""

    name: str
    num_classes: int
    pt_file: str
    npz_file: str
    label_sets: dict[str, str]
    default: str
    aliases: dict[str, str]  # other spellings of a label set -> its canonical name


CIFAR10N = _CifarN(
    "cifar10n", 10, "CIFAR-10_human.pt", "cifar10n_labels.npz",
    {"aggre": "aggre_label", "worst": "worse_label", "random1": "random_label1", "random2": "random_label2",
     "random3": "random_label3"},
    default="worst", aliases={"rand1": "random1", "rand2": "random2", "rand3": "random3"})
CIFAR100N = _CifarN("cifar100n", 100, "CIFAR-100_human.pt", "cifar100n_labels.npz",
                    {"noisy": "noisy_label"}, default="noisy", aliases={"noisy100": "noisy"})


def _numpy_safe_globals() -> list[Any]:
    """What ``weights_only`` unpickling needs for numpy arrays: ndarray, dtype and its per-type classes,
    and ``_reconstruct`` under both its numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) names."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    dtype_types = [type(np.dtype(code)) for code in "?bBhHiIlLqQefd"]
    return [np.ndarray, np.dtype, *dtype_types, (_reconstruct, "numpy.core.multiarray._reconstruct"),
            (_reconstruct, "numpy._core.multiarray._reconstruct")]


def _load_pt(path: Path) -> dict[str, Any]:
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)|got <class '([^']+)'>", str(exc))
        if found:
            raise LnlError(f"refusing to load {path}: it holds {found.group(1) or found.group(2)}, not only "
                           f"arrays and lists, which would need arbitrary pickle; re-save the label arrays "
                           f"as .npz") from None
        raise LnlError(f"cannot read label file {path} (not a torch file); download it again") from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise LnlError(f"cannot read label file {path} ({type(exc).__name__}); download it again") from None
    if not isinstance(data, dict):
        raise LnlError(f"label file {path} holds a {type(data).__name__}, not a dict of label arrays")
    return data


def load_label_file(path: str | Path) -> dict[str, np.ndarray]:
    """A CIFAR-N label file (``.pt`` without arbitrary pickle, or ``.npz``) as int64 arrays by key."""
    path = Path(path)
    if path.suffix == ".npz":
        if path.is_file():
            check_npz(path, "label file")
        try:
            with np.load(path, allow_pickle=False) as z:
                data: dict[str, Any] = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise LnlError(f"cannot read label file {path} ({exc}); download it again") from None
    elif path.suffix == ".pt":
        data = _load_pt(path)
    else:
        raise LnlError(f"label file {path} must be a .pt (as published) or .npz file")
    try:
        return {str(k): np.asarray(v, dtype=np.int64) for k, v in data.items()}
    except (TypeError, ValueError) as exc:
        raise LnlError(f"label file {path} holds a non-integer array ({exc}); it is not a CIFAR-N file") from None


def _find_file(spec: _CifarN, info: NoiseInfo, label_file: Any) -> Path:
    """The ``label_file`` option, else ``<data_root>/cifar-n/<pt>`` or the ``.npz`` copy beside it."""
    if label_file:
        path = Path(label_file).expanduser()
        if not path.is_file():
            raise LnlError(f"{spec.name} label file not found: {path}; fix the label_file option or download "
                           f"{spec.pt_file} from {REPO_HINT}")
        return path
    if info.data_root is None:
        raise LnlError(f"{spec.name} needs {spec.pt_file}: set the data root (--data-root) or the noise "
                       f"option label_file; get the file from {REPO_HINT}")
    folder = Path(info.data_root).expanduser() / "cifar-n"
    for candidate in (folder / spec.pt_file, folder / spec.npz_file):
        if candidate.is_file():
            return candidate
    raise LnlError(f"{spec.name} label file not found: expected {folder / spec.pt_file} (or "
                   f"{folder / spec.npz_file}); download {spec.pt_file} from {REPO_HINT} into {folder}")


def _check_rate(name: str, rate: float) -> None:
    if rate != 0:
        raise LnlError(f"noise '{name}' uses fixed labels, so its rate is set by the labels; use rate 0 "
                       f"(got {rate})")


def _select(spec: _CifarN, path: Path, arrays: dict[str, np.ndarray], key: str, clean: np.ndarray,
            train_index: np.ndarray | None) -> np.ndarray:
    """The noisy labels of the given samples, after checking the file's clean labels match ours."""
    for need in ("clean_label", key):
        if need not in arrays:
            raise LnlError(f"{path} has no '{need}' array (keys: {', '.join(sorted(arrays))}); it is not "
                           f"the {spec.name} file from {REPO_HINT}")
    total = len(arrays["clean_label"])
    if train_index is None:
        if len(clean) != total:
            raise LnlError(f"{len(clean)} labels but {path} has {total}; pass info.train_index (each "
                           f"sample's index in the original training set)")
        train_index = np.arange(total)
    idx = np.asarray(train_index, dtype=np.int64)
    if idx.shape != clean.shape or (idx.size and (idx.min() < 0 or idx.max() >= total)):
        raise LnlError(f"train_index must give one index in [0, {total}) per label for {path}")
    wrong = int(np.count_nonzero(arrays["clean_label"][idx] != clean))
    if wrong:
        raise LnlError(f"the image order does not match the CIFAR-N file {path}: {wrong} of {len(clean)} "
                       f"clean labels differ; load the training set in its original (python-version/"
                       f"torchvision) order, or use the file of this dataset")
    return arrays[key][idx]


def _cifar_n(spec: _CifarN, labels: np.ndarray, num_classes: int, rate: float,
             info: NoiseInfo) -> NoisyLabels:
    clean = validate_inputs(labels, num_classes, rate)
    _check_rate(spec.name, rate)
    opts = read_options(spec.name, info, {"label_set": spec.default, "label_file": None})
    label_set = str(opts["label_set"]).lower()
    label_set = spec.aliases.get(label_set, label_set)
    if label_set not in spec.label_sets:
        known = [*spec.label_sets, *spec.aliases]
        raise LnlError(f"{spec.name} label_set must be one of {', '.join(known)}, got '{label_set}'")
    if num_classes != spec.num_classes:
        raise LnlError(f"{spec.name} labels need a {spec.num_classes}-class dataset, got {num_classes} "
                       f"classes; use the matching CIFAR dataset")
    path = _find_file(spec, info, opts["label_file"])
    noisy = _select(spec, path, load_label_file(path), spec.label_sets[label_set], clean, info.train_index)
    if noisy.size and (noisy.min() < 0 or noisy.max() >= num_classes):
        raise LnlError(f"{path} has noisy labels outside [0, {num_classes}); the file is damaged")
    return noisy_result(clean, noisy, empirical_transition(clean, noisy, num_classes))


@register_noise("cifar10n", variant_option="label_set", fixed_rate=True, default_variant=CIFAR10N.default,
                aliases=CIFAR10N.aliases)
def cifar10n(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
             info: NoiseInfo) -> NoisyLabels:
    """CIFAR-10N human labels (Wei et al. 2022); label_set aggre | random1-3 (rand1-3) | worst (default)."""
    return _cifar_n(CIFAR10N, labels, num_classes, rate, info)


@register_noise("cifar100n", variant_option="label_set", fixed_rate=True, default_variant=CIFAR100N.default,
                aliases=CIFAR100N.aliases)
def cifar100n(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
              info: NoiseInfo) -> NoisyLabels:
    """CIFAR-100N human labels (Wei et al. 2022), fine-label set 'noisy' (40.2% noise)."""
    return _cifar_n(CIFAR100N, labels, num_classes, rate, info)


@register_noise("given", fixed_rate=True)
def given(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
          info: NoiseInfo) -> NoisyLabels:
    """Noisy labels shipped with the dataset (e.g. Clothing1M's), used as they are; rate must be 0."""
    clean = validate_inputs(labels, num_classes, rate)
    _check_rate("given", rate)
    read_options("given", info, {})
    if info.given_noisy is None:
        raise LnlError(f"noise 'given' needs noisy labels shipped with the dataset, but '{info.dataset}' has "
                       f"none; use a synthetic noise such as symmetric")
    noisy = np.asarray(info.given_noisy)
    if noisy.shape != clean.shape or (noisy.size and not np.issubdtype(noisy.dtype, np.integer)):
        raise LnlError(f"given noisy labels have shape {noisy.shape} {noisy.dtype} but labels {clean.shape}; "
                       f"the dataset must give one integer label per sample")
    noisy = noisy.astype(np.int64)
    if noisy.size and (noisy.min() < 0 or noisy.max() >= num_classes):
        raise LnlError(f"given noisy labels must lie in [0, {num_classes}); check the dataset's label file")
    return noisy_result(clean, noisy, empirical_transition(clean, noisy, num_classes))
