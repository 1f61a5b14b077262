"""Cloud storage for real: a grid with ``storage: s3://...`` against a local S3 server (moto's server mode
on 127.0.0.1, started by the test), and the one-line errors for a missing bucket or an unreachable endpoint.

Skipped where moto (the ``test`` extra) or Ray is not installed.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("ray")
pytestmark = pytest.mark.slow

from lnlbench.cli import main  # noqa: E402
from lnlbench.runner.spec import expand, parse_spec  # noqa: E402


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A moto S3 server on a free local port; yields the environment that points AWS clients at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "LNLBENCH_STAGING": str(tmp_path / "staging")}
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("waited 60s for the moto S3 server to listen; it did not")
            time.sleep(0.1)
    boto3.client("s3").create_bucket(Bucket="lnl")
    try:
        yield env
    finally:
        server.kill()
        server.wait(timeout=30)


def _grid(tmp_path, storage: str) -> Path:
    raw = {"name": "s3grid", "datasets": ["digits"], "methods": ["ce"], "noise": [{"name": "symmetric", "rates": [0.4]}],
           "seeds": [0, 1], "epochs": 2, "subset": 10, "trial": {"data_root": str(tmp_path / "data")},
           "storage": storage, "executor": "light", "resources": {"cpus_per_worker": 1, "gpus_per_worker": 0}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_missing_bucket_and_unreachable_endpoint_are_one_line_errors(s3, tmp_path, capsys, monkeypatch):
    for storage, expected in (("s3://nobucket/run", "bucket 'nobucket' does not exist"),):
        assert main(["run", str(_grid(tmp_path, storage))]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    assert main(["run", str(_grid(tmp_path, "s3://lnl/run"))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is unreachable" in err, err
    assert not (tmp_path / "staging").exists()  # no trial started


def test_grid_on_s3_writes_every_trial(s3, tmp_path):
    path = _grid(tmp_path, "s3://lnl/run")
    ids = [c.trial_id for c in expand(parse_spec(yaml.safe_load(path.read_text())))]
    ray_tmp = tempfile.mkdtemp(prefix="lnls3", dir="/tmp")  # a private Ray for the driver
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled")
    done = subprocess.run([sys.executable, "-m", "lnlbench.cli", "run", str(path), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    client = boto3.client("s3")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="lnl", Prefix="run/")["Contents"]}
    assert {"run/grid.yaml", "run/cells.json"} <= keys
    for tid in ids:
        res = json.loads(client.get_object(Bucket="lnl", Key=f"run/trials/{tid}/result.json")["Body"].read())
        assert res["status"] == "ok" and res["epochs_done"] == 2
        assert f"run/trials/{tid}/events.jsonl" in keys
