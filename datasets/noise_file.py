"""Frozen noise files: a cell's noisy labels saved to be shared, and trained on again exactly.

``lnlbench noise export`` writes an ``.npz`` with ``labels`` (int64, one per training sample, in the
trial's training order), ``transition`` (the C×C matrix the generator meant) and ``meta``: a 0-d string
array holding JSON (schema, the labels' SHA-256, dataset, length, the clean-label fingerprint, generator,
options, rate, seed, subset, the source trial). ``--noise file:PATH`` (the ``file`` generator below) trains
on exactly those labels after checking they belong to the trial's data: the dataset name, the length and
the clean-label fingerprint (a hash of the clean labels and each sample's original index, as the noise
cache names its files), each a one-line error naming what differs and the fix.

Noise files of other suites that are plain label arrays load the same way: a ``.npy`` of integers, a JSON
list, an ``.npz`` with one array (or a ``labels`` array). Without metadata only the length can be
checked; a warning says so and the trial's noise options record ``checks: length``. Nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lnlbench.errors import LnlError
from lnlbench.files import atomic_write
from lnlbench.registry import register_noise
from lnlbench.types import NoiseInfo, NoisyLabels

from .arrayfile import check_npz
from .noise import empirical_transition, noisy_result, read_options, validate_inputs

SCHEMA = "lnlbench.noise/1"
FULL_CHECKS = "dataset, length, clean labels"
PLAIN_CHECKS = "length"


def labels_sha256(labels: np.ndarray) -> str:
    """The SHA-256 of labels as int64 bytes: the hash result.json records for a cell's noisy labels."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


def clean_fingerprint(clean: np.ndarray, train_index: np.ndarray | None) -> str:
    """12 hex digits of the SHA-256 of the clean labels and each sample's original index: which images,
    in which order (a subset or another array file has another fingerprint)."""
    index = np.arange(len(clean)) if train_index is None else train_index
    h = hashlib.sha256(np.ascontiguousarray(clean, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(index, dtype=np.int64).tobytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class NoiseFile:
    """A noise file's labels, its metadata (None for a plain array) and its transition (if it has one)."""

    labels: np.ndarray
    meta: dict[str, Any] | None = None
    transition: np.ndarray | None = None


def _as_labels(values: Any, path: Path) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise LnlError(f"noise file {path} must hold one integer label per sample, got an array of shape "
                       f"{arr.shape} and type {arr.dtype}")
    return arr.astype(np.int64)


def _read_npz(path: Path) -> NoiseFile:
    check_npz(path, "noise file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise LnlError(f"cannot read noise file {path} ({type(exc).__name__}); it is damaged or holds "
                       "pickled objects") from None
    if "labels" not in arrays:
        if len(arrays) != 1:
            raise LnlError(f"noise file {path} has arrays {', '.join(sorted(arrays))} but no 'labels'; save "
                           "the labels alone, or under the key 'labels'")
        return NoiseFile(_as_labels(next(iter(arrays.values())), path))
    meta = None
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except ValueError:
            raise LnlError(f"noise file {path} has a damaged 'meta' entry; export it again") from None
    transition = arrays.get("transition")
    return NoiseFile(_as_labels(arrays["labels"], path), meta if isinstance(meta, dict) else None,
                     None if transition is None else np.asarray(transition, dtype=np.float64))


def read_noise_file(path: str | Path) -> NoiseFile:
    """An exported ``.npz`` (labels + metadata) or a plain array (.npy, a .json list, a one-array .npz)."""
    path = Path(path)
    if not path.is_file():
        raise LnlError(f"noise file not found: {path}; check the path given as file:PATH")
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix == ".npy":
        try:
            return NoiseFile(_as_labels(np.load(path, allow_pickle=False), path))
        except (OSError, ValueError, EOFError) as exc:
            raise LnlError(f"cannot read noise file {path} ({type(exc).__name__}); it is not a .npy array "
                           "of integers (pickled arrays are refused)") from None
    if path.suffix == ".json":
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LnlError(f"cannot read noise file {path} ({type(exc).__name__}); it must be a JSON list "
                           "of integer labels") from None
        if not isinstance(values, list) or not all(type(v) is int for v in values):
            raise LnlError(f"noise file {path} must be a JSON list of integer labels")
        return NoiseFile(_as_labels(np.array(values, dtype=np.int64), path))
    raise LnlError(f"noise file {path} must be an .npz (lnlbench noise export), or a plain label array as "
                   ".npy or .json")


def write_noise_file(path: str | Path, labels: np.ndarray, transition: np.ndarray, meta: dict[str, Any]) -> Path:
    """Write an exported noise file atomically (the labels' hash is added to ``meta``)."""
    labels = np.asarray(labels, dtype=np.int64)
    meta = {"schema": SCHEMA, "sha256": labels_sha256(labels), "n": int(len(labels)), **meta}
    blob = np.array(json.dumps(meta, sort_keys=True, default=str))
    trans = np.asarray(transition, dtype=np.float64)
    return atomic_write(path, lambda f: np.savez(f, labels=labels, transition=trans, meta=blob))


def _made_with(meta: dict[str, Any]) -> str:
    return f"subset={meta.get('subset')}, subset_seed={meta.get('subset_seed')}"


def check_noise_file(nf: NoiseFile, path: Path, dataset: str, clean: np.ndarray,
                     train_index: np.ndarray | None) -> None:
    """A one-line error unless the file's labels belong to these clean labels (all a plain array allows)."""
    meta = nf.meta or {}
    if meta and meta.get("dataset") not in (None, dataset):
        raise LnlError(f"noise file {path} is for dataset '{meta['dataset']}', not '{dataset}'; train on "
                       f"{meta['dataset']}, or export the noise of a {dataset} trial")
    if len(nf.labels) != len(clean):
        made = f" (it was made with {_made_with(meta)})" if meta else ""
        raise LnlError(f"noise file {path} has {len(nf.labels)} labels but this trial trains on {len(clean)} "
                       f"images{made}; use the dataset, subset and subset_seed it was made for")
    mine, theirs = clean_fingerprint(clean, train_index), meta.get("clean_fingerprint")
    if theirs is not None and theirs != mine:
        raise LnlError(f"noise file {path} was made for other clean labels (clean-label hash {theirs}, this "
                       f"trial's {mine}): same length, other images or order; train with the data it was made "
                       f"for ({_made_with(meta)})")


def prepare_options(options: dict[str, Any]) -> dict[str, Any]:
    """At resolve time: the absolute path, the labels' SHA-256 and what can be checked (into the trial id)."""
    path = options.get("path")
    if not path:
        raise LnlError("noise 'file' needs a path: --noise file:PATH, or a grid entry {name: file, path: PATH}")
    path = Path(os.path.abspath(Path(str(path)).expanduser()))
    nf = read_noise_file(path)
    sha = labels_sha256(nf.labels)
    if nf.meta and nf.meta.get("sha256") not in (None, sha):
        raise LnlError(f"noise file {path} does not match the SHA-256 recorded in it; export it again")
    return {**options, "path": str(path), "sha256": sha, "checks": FULL_CHECKS if nf.meta else PLAIN_CHECKS}


def tag(options: Any) -> str | None:
    """``<file name>@<first 8 hex digits of the labels' hash>``: the noise label of a file trial."""
    if not options.get("path") or not options.get("sha256"):
        return None
    return f"{Path(str(options['path'])).stem}@{str(options['sha256'])[:8]}"


@register_noise("file", variant_option="path", fixed_rate=True, frozen=prepare_options, tag=tag)
def file_noise(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator,
               info: NoiseInfo) -> NoisyLabels:
    """Noisy labels frozen in a file (lnlbench noise export, or a plain .npy/.json array); rate must be 0."""
    clean = validate_inputs(labels, num_classes, rate)
    if rate != 0:
        raise LnlError(f"noise 'file' uses fixed labels, so its rate is set by the labels; use rate 0 "
                       f"(got {rate})")
    opts = read_options("file", info, {"path": None, "sha256": None, "checks": None})
    if not opts["path"]:
        raise LnlError("noise 'file' needs a path: --noise file:PATH, or a grid entry {name: file, path: PATH}")
    path = Path(str(opts["path"])).expanduser()
    nf = read_noise_file(path)
    if opts["sha256"] and labels_sha256(nf.labels) != opts["sha256"]:
        raise LnlError(f"noise file {path} changed since the trial was configured (its SHA-256 differs); "
                       "start the trial again")
    check_noise_file(nf, path, info.dataset, clean, info.train_index)
    if nf.labels.size and (nf.labels.min() < 0 or nf.labels.max() >= num_classes):
        raise LnlError(f"noise file {path} has labels outside [0, {num_classes}); it is for another dataset")
    if nf.meta is None:
        print(f"lnlbench: warning: noise file {path} is a plain label array without metadata: only its length "
              "is checked against the dataset (result.json records checks: length)", file=sys.stderr)
    return noisy_result(clean, nf.labels, empirical_transition(clean, nf.labels, num_classes))
