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

import json
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lnlbench.datasets.noise_file import (
    NoiseFile,
    clean_fingerprint,
    labels_sha256,
    read_noise_file,
    write_noise_file,
)
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
    clean_fingerprint: str | None = None  # which clean labels (and images) the noise was drawn for

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path, "sha256": self.sha256, "realized_rate": self.realized_rate,
                "generated": self.generated, "clean_fingerprint": self.clean_fingerprint}


def _fingerprint(data: DatasetInfo) -> str:
    return clean_fingerprint(data.y_train, data.train_index)


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
    fingerprint = _fingerprint(data)
    if getattr(NOISE.get(name), "frozen", None) is not None:  # labels frozen in a file: it is the record
        noisy = _generate(data, name, options, rate_v, seed, cache_dir)
        return noisy, NoiseRecord(str(options["path"]), labels_sha256(noisy.labels), noisy.realized_rate,
                                  generated=False, clean_fingerprint=fingerprint)
    path = noise_path(cache_dir, data, name, options, rate_v, seed)
    expected = None
    if path.exists():
        try:
            noisy, sha = _load(path, data)
            return noisy, NoiseRecord(str(path), sha, noisy.realized_rate, generated=False,
                                      clean_fingerprint=fingerprint)
        except _Damaged as exc:  # regenerate from the seed; the recorded hash must then be met
            expected = _recorded_sha(path)
            print(f"lnlbench: warning: noise file {path} is damaged ({exc}); discarded and regenerated from "
                  "its seed", file=sys.stderr)
            path.unlink()
    noisy = _generate(data, name, options, rate_v, seed, cache_dir)
    labels = np.asarray(noisy.labels, dtype=np.int64)
    sha = labels_sha256(labels)
    if expected is not None and sha != expected:  # the generator changed since: never swap labels silently
        raise LnlError(f"noise regenerated for {path} does not match the SHA-256 recorded for it (the noise "
                       "generator changed?); delete its .json to accept the new labels, knowing earlier "
                       "trials of this cell used others")
    meta = {"sha256": sha, "dataset": data.name, "noise": name, "options": options, "rate": rate_v,
            "seed": seed, "n": int(len(labels)), "realized_rate": noisy.realized_rate,
            "clean_fingerprint": fingerprint}
    # The sidecar first, then the labels: a reader that sees the .npz always finds its hash. Concurrent
    # writers of one cell write identical bytes, and each file is replaced atomically.
    atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=1, default=str))
    transition = np.asarray(noisy.transition, dtype=np.float64)
    atomic_write(path, lambda f: np.savez(f, labels=labels, transition=transition))
    return noisy, NoiseRecord(str(path), sha, noisy.realized_rate, generated=True,
                              clean_fingerprint=fingerprint)


def _generate(data: DatasetInfo, name: str, options: dict[str, Any], rate: float, seed: int,
              cache_dir: Path) -> NoisyLabels:
    """Call the generator ``name`` on the clean training labels, with its own seeded stream."""
    info = NoiseInfo(dataset=data.name, classes=tuple(data.classes), coarse_labels=data.y_train_coarse,
                     images=data.x_train, train_index=data.train_index, given_noisy=data.y_train_given_noisy,
                     data_root=cache_dir, options=dict(options))
    return NOISE.get(name)(data.y_train.copy(), data.num_classes, rate, noise_rng(seed), info)


def _trial_result(source: Path) -> Path:
    """The result.json of a trial folder, or of the only trial under a run folder."""
    if (source / "result.json").is_file():
        return source / "result.json"
    if not source.is_dir():
        raise LnlError(f"{source} is not a trial or run folder; pass the folder of a trial (with its "
                       "result.json)")
    found = sorted(p for p in source.rglob("result.json") if _is_result(p))
    if not found:
        raise LnlError(f"no lnlbench trial under {source}; pass a trial folder (it holds result.json)")
    if len(found) > 1:
        names = [str(p.parent.relative_to(source)) for p in found]
        raise LnlError(f"{source} holds {len(found)} trials; pass one trial folder, e.g. {source / names[0]} "
                       f"(trials: {', '.join(names[:3])}{' ...' if len(found) > 3 else ''})")
    return found[0]


def _is_result(path: Path) -> bool:
    try:
        return str(json.loads(path.read_text()).get("schema", "")).startswith("lnlbench.result/")
    except (OSError, ValueError, AttributeError):
        return False


def _file_fingerprint(path: Path, nf: NoiseFile) -> str | None:
    """The clean-label fingerprint of a noise file: in its metadata, its sidecar, or its cache file name."""
    meta = nf.meta or _sidecar(path)
    if meta.get("clean_fingerprint"):
        return str(meta["clean_fingerprint"])
    found = re.search(r"_([0-9a-f]{12})\.npz$", path.name)
    return found.group(1) if found else None


def _sidecar(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def export_noise(source: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the noisy labels of a trial (a trial folder, or a run folder with one trial) to ``out``.

    The labels come from the noise file its result.json records, checked against the recorded SHA-256;
    the file gets their hash, the generator, options, rate, seed, the clean-label fingerprint, the dataset,
    the length and the subset, so ``--noise file:OUT`` can check it belongs to a trial's data.
    """
    result_path = _trial_result(Path(source).expanduser())
    res = json.loads(result_path.read_text())
    noise, cfg = res.get("noise") or {}, res.get("config") or {}
    if not noise.get("file") or not noise.get("sha256"):
        raise LnlError(f"trial {result_path.parent} has no noise file recorded (it failed before building its "
                       "data); export a trial that ran")
    path = Path(noise["file"])
    if not path.is_file():
        raise LnlError(f"the noise file {path} of trial {result_path.parent} is missing (another machine's "
                       "cache?); rerun the trial here to regenerate it from its seed, then export")
    nf = read_noise_file(path)
    if labels_sha256(nf.labels) != noise["sha256"]:
        raise LnlError(f"the noise file {path} does not match the SHA-256 of trial {result_path.parent}; "
                       "rerun the trial to regenerate it, then export")
    fingerprint = noise.get("clean_fingerprint") or _file_fingerprint(path, nf)
    transition = nf.transition
    if transition is None:  # a plain array trained as file:PATH: the matrix its trial recorded
        transition = np.asarray((res.get("data") or {})["transition"])
    meta = {"dataset": res.get("dataset"), "clean_fingerprint": fingerprint, "noise": noise.get("name"),
            "options": noise.get("options") or {}, "rate": noise.get("rate"), "seed": res.get("seed"),
            "subset": (res.get("data") or {}).get("subset", cfg.get("subset")),
            "subset_seed": cfg.get("subset_seed"), "trial_id": res.get("trial_id"),
            "noise_label": res.get("noise_label")}
    write_noise_file(Path(out).expanduser(), nf.labels, transition, meta)
    return {"out": str(out), "sha256": noise["sha256"], "n": int(len(nf.labels)),
            "trial": str(result_path.parent),
            **meta}
