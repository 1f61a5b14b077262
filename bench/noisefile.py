"""Noisy labels are generated once per (dataset, noise, options, rate, seed), saved with a SHA-256, reused.

Every method and every rerun of a cell reads the same file, so methods are compared on identical labels.
The file name carries a fingerprint of the clean training labels (and their original indices), so a
subset or a different array file never reuses another set's noise. On reuse the labels' hash is checked
against the one recorded beside them; a mismatch is an error, never a silent regeneration.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lnlbench.types import DatasetInfo, NoiseInfo, NoisyLabels

from .errors import LnlError
from .files import atomic_write
from .registry import NOISE


@dataclass(frozen=True)
class NoiseRecord:
    """Where the noisy labels came from: what goes into result.json."""

    path: str
    sha256: str
    realized_rate: float
    generated: bool  # True if this call generated the file, False if it was reused

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path, "sha256": self.sha256, "realized_rate": self.realized_rate,
                "generated": self.generated}


def labels_sha256(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


def _fingerprint(data: DatasetInfo) -> str:
    h = hashlib.sha256(np.ascontiguousarray(data.y_train, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(data.train_index, dtype=np.int64).tobytes())
    return h.hexdigest()[:12]


def noise_rng(seed: int) -> np.random.Generator:
    """The generator for one cell's noise: its own stream, independent of the training seeds."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x4E015E]))


def noise_path(cache_dir: Path, data: DatasetInfo, name: str, options: dict[str, Any], rate: float,
               seed: int) -> Path:
    opts = "".join(f"-{k}={options[k]}" for k in sorted(options) if k != "label_file")
    safe = "".join(ch if ch.isalnum() or ch in "-=._" else "_" for ch in opts)
    return cache_dir / "noise" / data.name / f"{name}{safe}_r{rate:g}_s{seed}_{_fingerprint(data)}.npz"


def _load(path: Path, data: DatasetInfo) -> tuple[NoisyLabels, str]:
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(path, allow_pickle=False) as z:
            labels, transition = z["labels"].astype(np.int64), z["transition"]
    except (OSError, KeyError, ValueError) as exc:
        raise LnlError(f"noise file {path} is unreadable ({exc}); delete it to regenerate") from None
    sha = labels_sha256(labels)
    if sha != meta.get("sha256"):
        raise LnlError(f"noise file {path} does not match its recorded SHA-256; delete it to regenerate")
    if len(labels) != len(data.y_train):
        raise LnlError(f"noise file {path} has {len(labels)} labels for {len(data.y_train)} samples; "
                       "delete it to regenerate")
    return NoisyLabels(labels, labels != data.y_train, transition), sha


def noisy_labels_for(data: DatasetInfo, name: str, options: dict[str, Any], rate: float | None, seed: int,
                     cache_dir: Path) -> tuple[NoisyLabels, NoiseRecord]:
    """The cell's noisy labels: read from the cache if present, else generated with the seed and saved."""
    rate_v = 0.0 if rate is None else float(rate)
    path = noise_path(cache_dir, data, name, options, rate_v, seed)
    if path.exists():
        noisy, sha = _load(path, data)
        return noisy, NoiseRecord(str(path), sha, noisy.realized_rate, generated=False)
    info = NoiseInfo(dataset=data.name, classes=tuple(data.classes), coarse_labels=data.y_train_coarse,
                     images=data.x_train, train_index=data.train_index, given_noisy=data.y_train_given_noisy,
                     data_root=cache_dir, options=dict(options))
    noisy = NOISE.get(name)(data.y_train.copy(), data.num_classes, rate_v, noise_rng(seed), info)
    labels = np.asarray(noisy.labels, dtype=np.int64)
    sha = labels_sha256(labels)
    meta = {"sha256": sha, "dataset": data.name, "noise": name, "options": options, "rate": rate_v,
            "seed": seed, "n": int(len(labels)), "realized_rate": noisy.realized_rate}
    # The sidecar first, then the labels: a reader that sees the .npz always finds its hash. Concurrent
    # writers of one cell write identical bytes, and each file is replaced atomically.
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=1, default=str))
    transition = np.asarray(noisy.transition, dtype=np.float64)
    atomic_write(path, lambda f: np.savez(f, labels=labels, transition=transition))
    return noisy, NoiseRecord(str(path), sha, noisy.realized_rate, generated=True)
