"""Run folders on a URI storage (s3://, gs://, ...) through pyarrow's file systems (Ray uses the same).

With a local or shared (NFS) path the engine writes the trial folders in place and nothing here runs.
With a URI the engine writes to a node-local staging folder; each trial's ``result.json`` and
``events.jsonl`` are uploaded to ``<storage>/trials/<trial_id>/`` when the trial ends (ok or failed), and
its checkpoints travel through Ray Train's checkpoints (see :mod:`lnlbench.runner.worker`).
"""
from __future__ import annotations

from pathlib import Path

TRIAL_FILES = ("result.json", "events.jsonl")
# The reachability probe only: a short connect timeout and two attempts, so an endpoint where nothing
# listens is reported in well under a second instead of after pyarrow's default retries (about 6 s).
PROBE_CONNECT_TIMEOUT_S = 1.0
PROBE_REQUEST_TIMEOUT_S = 10.0
PROBE_ATTEMPTS = 2


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def _probe_fs(fs):
    """``fs`` with the probe's short timeouts and retries where it is an S3 file system (same endpoint,
    region and credentials: its own constructor arguments); any other file system as it is."""
    import pyarrow.fs

    if not isinstance(fs, pyarrow.fs.S3FileSystem):
        return fs
    try:
        kwargs = dict(fs.__reduce__()[1][0])
        kwargs.update(connect_timeout=PROBE_CONNECT_TIMEOUT_S, request_timeout=PROBE_REQUEST_TIMEOUT_S,
                      retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=PROBE_ATTEMPTS))
        return pyarrow.fs.S3FileSystem(**kwargs)
    except (TypeError, ValueError, IndexError, KeyError):  # another pyarrow's arguments: the slow probe
        return fs


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


def check_reachable(uri: str) -> None:
    """A URI storage must answer and its bucket exist, checked with a probe file before any trial starts.

    Raises a one-line :class:`LnlError` for an unreachable endpoint, a missing bucket, or refused writes
    (the endpoint of an S3-compatible server comes from ``AWS_ENDPOINT_URL``, as for Ray itself).
    """
    import uuid

    import pyarrow.fs

    from lnlbench.errors import LnlError

    def first(exc: Exception) -> str:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]

    try:
        fs, path = _fs(uri)
        fs = _probe_fs(fs)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        raise LnlError(f"storage {uri} cannot be opened ({first(exc)}); check the URI") from None
    bucket = path.split("/", 1)[0]
    try:
        found = fs.get_file_info(bucket).type
    except (OSError, pyarrow.ArrowException) as exc:
        raise LnlError(f"storage {uri} is unreachable ({first(exc)}); check the endpoint "
                       "(AWS_ENDPOINT_URL) and credentials") from None
    if found == pyarrow.fs.FileType.NotFound:
        raise LnlError(f"storage {uri}: bucket '{bucket}' does not exist; create it first")
    probe = f"{path}/.lnlbench-write-test-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except (OSError, pyarrow.ArrowException) as exc:
        raise LnlError(f"storage {uri} is not writable ({first(exc)}); check its permissions") from None
