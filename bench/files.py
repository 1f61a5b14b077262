"""Writing a file so that a reader never sees half of it: :func:`atomic_write`.

Trial folders are read while they are written (``lnlbench status``, a resumed trial, concurrent grid
workers sharing a noise cache), so every file lnlbench writes goes to a temporary file in the same
folder first and is then renamed over the target (``os.replace`` is atomic on one file system).
"""
from __future__ import annotations

import os
import tempfile
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
