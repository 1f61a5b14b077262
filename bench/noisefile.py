"""Noisy labels are generated once per (dataset, noise, options, rate, seed), saved with a SHA-256, reused.

Every method and every rerun of a cell reads the same file, so methods are compared on identical labels.
The file name carries a fingerprint of the clean training labels (and their original indices), so a
subset or a different array file never reuses another set's noise. On reuse the labels' hash is checked
against the one recorded beside them: a readable file whose labels do not match is an error (tampered, or
another generator), never a silent regeneration. A file that is not whole (cut short by a crash or a full
disk: unreadable, or an unreadable sidecar) is discarded with a warning and regenerated from its seed; the
regenerated labels must match the recorded hash where it is readable, else it is an error.
"""
from __future__ import annotations

import hashlib
import json
import sys
import zipfile
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


class _Damaged(Exception):
    """The noise file or its sidecar is not whole (cut short, or its bytes changed)."""


def _recorded_sha(path: Path) -> str | None:
    """The SHA-256 recorded in the sidecar, or None if the sidecar is missing or damaged."""
    try:
        sha = json.loads(path.with_suffix(".json").read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) else None


def _load(path: Path, data: DatasetInfo) -> tuple[NoisyLabels, str]:
    """The cached labels, checked against the hash beside them; :class:`_Damaged` if they are not whole."""
    recorded = _recorded_sha(path)
    if recorded is None:
        raise _Damaged("its .json sidecar with the SHA-256 is missing or unreadable")
    try:
        with np.load(path, allow_pickle=False) as z:
            labels, transition = z["labels"].astype(np.int64), z["transition"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _Damaged(f"unreadable: {type(exc).__name__}") from None
    sha = labels_sha256(labels)
    if sha != recorded:  # whole but changed: tampered or another generator, never replaced silently
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
    expected = None
    if path.exists():
        try:
            noisy, sha = _load(path, data)
            return noisy, NoiseRecord(str(path), sha, noisy.realized_rate, generated=False)
        except _Damaged as exc:  # regenerate from the seed; the recorded hash must then be met
            expected = _recorded_sha(path)
            print(f"lnlbench: warning: noise file {path} is damaged ({exc}); discarded and regenerated from "
                  "its seed", file=sys.stderr)
            path.unlink()
    info = NoiseInfo(dataset=data.name, classes=tuple(data.classes), coarse_labels=data.y_train_coarse,
                     images=data.x_train, train_index=data.train_index, given_noisy=data.y_train_given_noisy,
                     data_root=cache_dir, options=dict(options))
    noisy = NOISE.get(name)(data.y_train.copy(), data.num_classes, rate_v, noise_rng(seed), info)
    labels = np.asarray(noisy.labels, dtype=np.int64)
    sha = labels_sha256(labels)
    if expected is not None and sha != expected:  # the generator changed since: never swap labels silently
        raise LnlError(f"noise regenerated for {path} does not match the SHA-256 recorded for it (the noise "
                       "generator changed?); delete its .json to accept the new labels, knowing earlier "
                       "trials of this cell used others")
    meta = {"sha256": sha, "dataset": data.name, "noise": name, "options": options, "rate": rate_v,
            "seed": seed, "n": int(len(labels)), "realized_rate": noisy.realized_rate}
    # The sidecar first, then the labels: a reader that sees the .npz always finds its hash. Concurrent
    # writers of one cell write identical bytes, and each file is replaced atomically.
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=1, default=str))
    transition = np.asarray(noisy.transition, dtype=np.float64)
    atomic_write(path, lambda f: np.savez(f, labels=labels, transition=transition))
    return noisy, NoiseRecord(str(path), sha, noisy.realized_rate, generated=True)
