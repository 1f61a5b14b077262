"""Run folders on a URI storage (s3://, gs://, ...) through pyarrow's file systems (Ray uses the same).

With a local or shared (NFS) path the engine writes the trial folders in place and nothing here runs.
With a URI the engine writes to a node-local staging folder; each trial's ``result.json`` and
``events.jsonl`` are uploaded to ``<storage>/trials/<trial_id>/`` when the trial ends (ok or failed), and
its checkpoints travel through Ray Train's checkpoints (see :mod:`lnlbench.runner.worker`).
"""
from __future__ import annotations

from pathlib import Path

TRIAL_FILES = ("result.json", "events.jsonl")


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def read_text(uri: str) -> str | None:
    """The text at ``uri``, or None if it does not exist."""
    import pyarrow.fs

    fs, path = _fs(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(uri: str, text: str) -> None:
    fs, path = _fs(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def upload_trial(folder: Path, storage: str) -> None:
    """Copy a staged trial folder's result and events to ``<storage>/trials/<trial_id>/``."""
    for name in TRIAL_FILES:
        src = folder / name
        if src.exists():
            write_text(f"{storage}/trials/{folder.name}/{name}", src.read_text())
