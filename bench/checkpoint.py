"""Checkpoint files that are never loaded half, and never run code.

``checkpoint.pt`` is ``torch.save``'s bytes followed by a 48-byte trailer (payload length, its SHA-256,
a magic tag), so a file cut short on a file system without atomic rename, or by a full disk, is detected
by its size or hash before ``torch.load`` sees it. :func:`save` keeps the previous checkpoint as
``checkpoint.prev.pt``; :func:`load_good` discards a damaged file with a warning and falls back to the
previous one, then to none (the trial restarts from epoch 0). Files are loaded with ``weights_only=True``:
a checkpoint holding a pickled callable is refused (an error, never run).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import LnlError
from .files import atomic_write

MAGIC = b"LNLCKPT1"
_TRAILER = struct.Struct("<Q32s8s")  # payload length, SHA-256 of the payload, MAGIC


class DamagedCheckpoint(Exception):
    """The file is not a whole checkpoint (cut short, or its bytes changed)."""


def previous(path: Path) -> Path:
    """Where :func:`save` keeps the checkpoint before the latest one."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def encode(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return payload + _TRAILER.pack(len(payload), hashlib.sha256(payload).digest(), MAGIC)


def payload_of(data: bytes) -> bytes:
    """The torch bytes of a checkpoint file, checked against its trailer (a file without one, written
    before trailers existed, is returned as it is and checked by loading it)."""
    if data[-len(MAGIC):] != MAGIC:
        return data
    if len(data) < _TRAILER.size:
        raise DamagedCheckpoint(f"{len(data)} bytes, shorter than its trailer")
    n, digest, _ = _TRAILER.unpack(data[-_TRAILER.size:])
    payload = data[:-_TRAILER.size]
    if len(payload) != n:
        raise DamagedCheckpoint(f"{len(payload)} bytes where its trailer records {n}")
    if hashlib.sha256(payload).digest() != digest:
        raise DamagedCheckpoint("its SHA-256 does not match the one it records")
    return payload


def parse(payload: bytes, map_location: Any, where: Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: tensors, containers and numbers, never code."""
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            first = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln),
                         "a Python object")
            raise LnlError(f"refusing to load checkpoint {where}: it holds more than tensors and numbers "
                           f"({first}); delete it if you did not write it") from None
        raise DamagedCheckpoint(f"unreadable ({exc})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise DamagedCheckpoint(f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (atomically, with its trailer); the checkpoint it replaces becomes the previous."""
    data = encode(state)
    if path.exists():
        os.replace(path, previous(path))
    atomic_write(path, data)


def load_good(path: Path, map_location: Any = "cpu") -> tuple[dict[str, Any] | None, bytes | None]:
    """(state, payload) of the newest whole checkpoint at ``path`` or its previous one; (None, None) if
    neither is whole. A damaged file is deleted with a warning on stderr."""
    for candidate, fallback in ((path, "the previous checkpoint"), (previous(path), "epoch 0")):
        if not candidate.exists():
            continue
        try:
            payload = payload_of(candidate.read_bytes())
            return parse(payload, map_location, candidate), payload
        except DamagedCheckpoint as exc:
            print(f"lnlbench: warning: checkpoint {candidate} is damaged ({exc}); discarded, resuming from "
                  f"{fallback}", file=sys.stderr)
            candidate.unlink()
    return None, None


def remove(path: Path) -> None:
    """Delete a finished trial's checkpoints (the latest and the previous)."""
    for p in (path, previous(path)):
        if p.exists():
            p.unlink()
