"""Cloud storage for real: a grid with ``storage: s3://...`` against a local S3 server (moto's server mode
on 127.0.0.1, started by the test) writes every trial and survives a driver kill; a missing bucket or an
unreachable endpoint is a one-line error before any trial starts.

Skipped where moto (the ``test`` extra) or Ray is not installed.
"""
from __future__ import annotations

import json
import os
import signal
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


def _grid(tmp_path, storage: str, **over) -> Path:
    raw = {"name": "s3grid", "datasets": ["digits"], "methods": ["ce"], "noise": [{"name": "symmetric", "rates": [0.4]}],
           "seeds": [0, 1], "epochs": 2, "subset": 10, "trial": {"data_root": str(tmp_path / "data")},
           "storage": storage, "executor": "light", "resources": {"cpus_per_worker": 1, "gpus_per_worker": 0}, **over}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_missing_bucket_and_unreachable_endpoint_are_one_line_errors(s3, tmp_path, capsys, monkeypatch):
    for storage, expected in (("s3://nobucket/run", "bucket 'nobucket' does not exist"),):
        assert main(["run", str(_grid(tmp_path, storage))]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # nothing listens there
    started = time.monotonic()
    assert main(["run", str(_grid(tmp_path, "s3://lnl/run"))]) == 2
    took = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is unreachable" in err, err
    assert took < 2.0, f"the unreachable-storage check took {took:.1f}s (the probe's short timeout/retries)"
    assert not (tmp_path / "staging").exists()  # no trial started


def test_grid_on_s3_survives_a_driver_kill_and_writes_every_trial(s3, tmp_path):
    """The driver is SIGKILLed once one trial is done and the other is past its first epoch; the same
    ``lnlbench run`` again finishes the grid from the bucket: the finished trial is not rerun."""
    from test_runner_ray import _descendants, _kill_ours, _mid_run, _wait_for

    path = _grid(tmp_path, "s3://lnl/run", epochs=20, subset=20, max_concurrent=1)
    ids = [c.trial_id for c in expand(parse_spec(yaml.safe_load(path.read_text())))]
    staging = tmp_path / "staging" / "s3grid" / "trials"  # where the engine writes before uploading

    def states() -> dict[str, tuple[str, int]]:
        out = {}
        for tid in ids:
            try:
                res = json.loads((staging / tid / "result.json").read_text())
                out[tid] = (res["status"], res.get("epochs_done") or 0)
            except (OSError, ValueError):
                out[tid] = ("pending", 0)
        return out

    tag = f"lnlbench-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=tempfile.mkdtemp(prefix="lnls3", dir="/tmp"), RAY_AUTH_MODE="disabled", LNLBENCH_TEST_TAG=tag)
    cmd = [sys.executable, "-m", "lnlbench.cli", "run", str(path), "--quiet"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def mid_run():
            assert driver.poll() is None, f"the driver ended before it could be killed: {states()}"
            return _mid_run(states())

        _wait_for("one trial done and the other past its first epoch, on s3 (Ray start-up included)", 900, mid_run)
        procs = _descendants(driver.pid)
        os.kill(driver.pid, signal.SIGKILL)
        _kill_ours(tag, procs)
        driver.wait(timeout=30)
        finished = [tid for tid, (st, _) in states().items() if st == "ok"]
        assert finished and len(finished) < len(ids), states()
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        if driver.poll() is None:
            driver.kill()
        _kill_ours(tag)
    client = boto3.client("s3")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="lnl", Prefix="run/")["Contents"]}
    assert {"run/grid.yaml", "run/cells.json"} <= keys
    for tid in ids:
        res = json.loads(client.get_object(Bucket="lnl", Key=f"run/trials/{tid}/result.json")["Body"].read())
        assert res["status"] == "ok" and res["epochs_done"] == 20
        events = client.get_object(Bucket="lnl", Key=f"run/trials/{tid}/events.jsonl")["Body"].read().decode()
        kinds = [json.loads(line)["event"] for line in events.splitlines() if line.strip()]
        if tid in finished:
            assert kinds == ["start", "end"]  # not rerun after the kill
        else:
            assert kinds[0] == "start" and kinds[-1] == "end"
