"""One driver per run folder: ``lnlbench run`` / ``resume`` hold ``<run folder>/driver.lock``.

Two drivers on one storage would both train the same cells and race on their files. The lock file is
created exclusively (``O_EXCL``) and holds the driver's host, PID and start time; a second driver refuses
with a one-line error naming the first. A lock whose process is gone (same host, PID not alive) is stale:
it is replaced with a note. A lock from another host cannot be checked from here: the error says to delete
it if that driver is gone. No Ray here.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from lnlbench.errors import LnlError

LOCK_FILE = "driver.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def _stale(held: dict | None) -> bool:
    """True if the lock's driver is known to be gone (an unreadable lock is a crash mid-write: stale)."""
    if held is None:
        return True
    if held.get("host") != socket.gethostname():
        return False
    return not _alive(int(held.get("pid", -1)))


def acquire(folder: str | Path) -> Path:
    """Take the run folder's lock or raise :class:`LnlError` naming the driver that holds it."""
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _holder(path)
            if not _stale(held):
                raise LnlError(f"another lnlbench driver is running this grid: pid {held.get('pid')} on "
                               f"{held.get('host')} since {held.get('started')} (lock {path}); wait for it, "
                               "or delete the lock if that driver is gone") from None
            who = f"pid {held.get('pid')}" if held else "unreadable"
            print(f"lnlbench: note: removing the stale driver lock {path} ({who}, no longer running)",
                  file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise LnlError(f"cannot take the driver lock {path}: another driver took it at the same moment")


def describe(folder: str | Path) -> str | None:
    """The line ``lnlbench status`` prints about the run folder's driver, or None without a lock."""
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return None
    held = _holder(path)
    if held is None:
        return f"driver: unreadable lock {path} (stale; the next run replaces it)"
    if held.get("host") != socket.gethostname():
        state = "on another host; not checked from here"
    else:
        state = "stale: that process is gone; the next run replaces the lock" if _stale(held) else "running"
    return f"driver: pid {held.get('pid')} on {held.get('host')} since {held.get('started')} ({state})"


def release(path: Path) -> None:
    """Remove the lock if it is still this process's."""
    held = _holder(path)
    if held and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def driver_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the run folder's driver lock for the ``with`` block."""
    path = acquire(folder)
    try:
        yield path
    finally:
        release(path)
