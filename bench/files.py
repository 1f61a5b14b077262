"""Writing a file so that a reader never sees half of it: :func:`atomic_write`; checking a folder can be
written before anything runs: :func:`writable_dir`.

Trial folders are read while they are written (``lnlbench status``, a resumed trial, concurrent grid
workers sharing a noise cache), so every file lnlbench writes goes to a temporary file in the same
folder first and is then renamed over the target (``os.replace`` is atomic on one file system).
"""
from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Content = str | bytes | Callable[[BinaryIO], None]


def atomic_write(path: str | Path, content: Content) -> Path:
    """Write ``content`` to ``path`` atomically and return the path; creates the parent folder.

    ``content`` is text (UTF-8), bytes, or a function that writes into the open binary file (e.g.
    ``lambda f: np.savez(f, **arrays)`` or ``lambda f: torch.save(state, f)``). The temporary file is
    removed if writing fails, so a crash leaves either the old file or the new one, never a fragment.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                f.write(content)
            else:
                content(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def absolute(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, made absolute and normalised (``a/../b`` → ``b``); symlinks are kept."""
    return Path(os.path.normpath(os.path.abspath(Path(path).expanduser())))


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) and prove it writable; returns it absolute.

    Raises a one-line :class:`~lnlbench.errors.LnlError` when a parent is a regular file, permission is
    missing or the disk refuses, so a command fails before it runs anything (not in its failure handler).
    """
    from .errors import LnlError

    folder = absolute(path)
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise LnlError(f"{what} {folder} is not writable: {parent} is a file, not a folder; "
                               "choose another path")
            break
    probe = folder / f".lnlbench-write-test-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise LnlError(f"{what} {folder} is not writable ({exc.strerror or exc}); choose a folder you can "
                       "write") from None
    return folder
