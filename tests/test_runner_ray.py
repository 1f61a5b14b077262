"""The grid runner on a real (local, session-scoped) Ray: Tune → Ray Train, retries, failures, resume.

Tiny trials (digits, 10 images per class, 2 epochs). Faults are injected from the test side through
marker files (see ``tests/ray_faults.py``, installed in every Ray worker by the session's setup hook).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import ray_faults
import torch
import yaml

from lnlbench.runner.spec import expand, parse_spec
from lnlbench.runner.status import collect

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: never attaches to another cluster, writes only to a temp dir."""
    from lnlbench.runner.ray_runner import LOCAL_ENV, QUIET_ENV

    tmp = tempfile.mkdtemp(prefix="lnlray", dir="/tmp")  # short: Ray's socket paths have a length limit
    for key, val in {"RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tmp, **QUIET_ENV, **LOCAL_ENV}.items():
        os.environ.setdefault(key, val)
    fault_dir = Path(tmp) / "faults"
    fault_dir.mkdir()
    ray.cloudpickle.register_pickle_by_value(ray_faults)  # the workers cannot import tests/
    env = {"worker_process_setup_hook": ray_faults.install, "env_vars": {ray_faults.ENV: str(fault_dir)}}
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
             logging_level="ERROR", runtime_env=env)
    yield fault_dir
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def faults(ray_session):
    """The folder of fault markers the workers read; emptied after each test."""
    yield ray_session
    for marker in ray_session.iterdir():
        marker.unlink()


def grid(tmp_path: Path, **over) -> dict:
    raw = {"name": "t", "datasets": ["digits"], "methods": ["ce"],
           "noise": [{"name": "symmetric", "rates": [0.2, 0.4]}], "seeds": [0, 1], "epochs": 2, "subset": 10,
           "trial": {"data_root": str(tmp_path / "data")}, "storage": str(tmp_path / "run"),
           "executor": "train", "max_failures": 1, "resources": {"cpus_per_worker": 1, "gpus_per_worker": 0}}
    raw.update(over)
    return raw


def events(run: Path, tid: str) -> list[dict]:
    path = run / "trials" / tid / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kinds(run: Path, tid: str) -> list[str]:
    return [e["event"] for e in events(run, tid)]


def result(run: Path, tid: str) -> dict:
    return json.loads((run / "trials" / tid / "result.json").read_text())


def test_2x2_grid_through_tune_and_train_retries_a_fault_and_survives_a_failing_trial(faults, tmp_path):
    """One 2×2 grid: a cell whose worker raises once, a cell that always fails, two plain cells."""
    from lnlbench.runner.ray_runner import run_grid

    spec = parse_spec(grid(tmp_path))
    flaky, broken, *plain = (c.trial_id for c in expand(spec))
    (faults / f"{flaky}.once").touch()
    (faults / f"{broken}.always").touch()

    outcome = run_grid(spec, quiet=True)

    run = Path(spec.storage)
    assert not outcome.ok and outcome.counts == {"done": 3, "running": 0, "failed": 1, "pending": 0}
    for tid in (flaky, broken, *plain):  # one result per cell, each from its own Ray Train run
        assert (run / "trials" / tid / "result.json").exists()
        assert (run / "train" / tid / "checkpoint_manager_snapshot.json").exists()
    for tid in (flaky, *plain):
        res = result(run, tid)
        assert res["status"] == "ok" and res["epochs_done"] == 2
    # The flaky trial was retried by Train's FailureConfig and continued after its checkpointed epoch 0.
    assert not (faults / f"{flaky}.once").exists()
    assert kinds(run, flaky) == ["start", "failed", "resume", "end"]
    assert events(run, flaky)[2]["epoch"] == 1
    for tid in plain:
        assert kinds(run, tid) == ["start", "end"]
    # Ray Train's latest checkpoint is a copy of the engine's last one (same trial, same epoch).
    found = (run / "train" / flaky).glob("checkpoint_*/lnlbench_checkpoint.json")
    metas = [json.loads(p.read_text()) for p in found]
    assert max(metas, key=lambda m: m["epoch"]) == {"trial_id": flaky, "epoch": 1}
    # The broken one: retried once from its checkpoint, then recorded as failed with its error.
    failed = result(run, broken)
    assert failed["status"] == "failed" and failed["error"]["type"] == "InjectedFault"
    assert kinds(run, broken) == ["start", "failed", "resume", "failed"]
    assert collect(run).counts()["failed"] == 1


def test_light_executor_retries_from_its_checkpoint_and_skips_finished_trials(faults, tmp_path):
    from lnlbench.runner.ray_runner import run_grid

    spec = parse_spec(grid(tmp_path, executor="light", seeds=[0]))
    first, second = (c.trial_id for c in expand(spec))
    (faults / f"{first}.once").touch()
    assert run_grid(spec, quiet=True).ok
    assert kinds(Path(spec.storage), first) == ["start", "failed", "resume", "end"]
    # The same grid again: everything is finished, nothing trains.
    assert run_grid(spec, quiet=True).ok
    assert kinds(Path(spec.storage), second) == ["start", "end"]
    # Again with a new --max-concurrent: a fresh Tune experiment (Tune keeps a restored one's limit),
    # and still nothing trains twice.
    assert run_grid(spec, quiet=True, max_concurrent=1).ok
    assert list(Path(spec.storage).glob("tune-*-k1"))
    assert kinds(Path(spec.storage), first) == ["start", "failed", "resume", "end"]
    assert kinds(Path(spec.storage), second) == ["start", "end"]


@pytest.mark.parametrize("executor", ["light", "train"])
def test_a_diverging_cell_fails_at_once_and_the_others_finish(ray_session, tmp_path, executor):
    """Divergence is deterministic: one attempt (no retry from its checkpoint), marked failed; a resume (a new
    driver session) tries it again, since the user may have changed something."""
    from lnlbench.runner.ray_runner import run_grid

    spec = parse_spec(grid(tmp_path, executor=executor, seeds=[0], methods=["ce", "sce"], max_failures=2,
                           noise=[{"name": "symmetric", "rates": [0.2]}], overrides={"ce": {"lr": 1e12}}))
    diverging, plain = (c.trial_id for c in expand(spec))
    outcome = run_grid(spec, quiet=True)
    run = Path(spec.storage)
    assert outcome.counts == {"done": 1, "running": 0, "failed": 1, "pending": 0}
    assert kinds(run, diverging) == ["start", "failed"]  # not retried max_failures times
    failed = result(run, diverging)
    assert failed["status"] == "failed" and failed["error"]["type"] == "NonFiniteError"
    assert "training diverged" in failed["error"]["message"]
    assert kinds(run, plain) == ["start", "end"] and result(run, plain)["status"] == "ok"
    if executor == "train":  # the resume below is the same for both executors (the driver's session)
        return
    run_grid(spec, quiet=True)  # a resume retries it once more (and it diverges again), the done cell stays
    assert kinds(run, diverging) == ["start", "failed", "resume", "failed"]
    assert kinds(run, plain) == ["start", "end"]


# -- a driver killed with SIGKILL --------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _tagged(tag: str) -> dict[int, int]:
    """Processes whose environment carries ``tag`` (the killed driver's Ray workers): pid → start time."""
    out = {}
    for pid in _pids():
        try:
            if tag.encode() in Path(f"/proc/{pid}/environ").read_bytes() and (st := _stat(pid)):
                out[pid] = st[2]
        except OSError:
            continue
    return out


def _descendants(root: int) -> dict[int, int]:
    """Processes below ``root`` (Ray's daemons rename themselves and hide their environment)."""
    stats = {pid: st for pid in _pids() if (st := _stat(pid))}
    found: dict[int, int] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, st in stats.items() if st[1] in frontier and pid not in found}
        found.update({pid: stats[pid][2] for pid in frontier})
    return found


def _kill_ours(tag: str, known: dict[int, int] | None = None, timeout: float = 30.0) -> None:
    """SIGKILL, by PID, the processes of the killed driver's Ray (they would die with it a few seconds
    later, and an orphaned worker could finish the trial in flight meanwhile). A PID counts only while its
    start time matches, so a reused PID is never touched."""
    procs = dict(known or {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.update(_tagged(tag))
        procs = {pid: t for pid, t in procs.items() if (st := _stat(pid)) and st[2] == t and st[0] != "Z"}
        if not procs:
            return
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _states(run: Path, ids: list[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for tid in ids:
        try:
            res = result(run, tid)
            out[tid] = (res["status"], res.get("epochs_done") or 0)
        except (OSError, ValueError):
            out[tid] = ("pending", 0)
    return out


def _wait_for(what: str, deadline_s: float, ready, poll: float = 0.1):
    """Poll ``ready()`` until it returns something truthy (returned); fail naming ``what`` after
    ``deadline_s`` seconds. Returns the seconds waited when ``ready`` returns ``True``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        got = ready()
        if got:
            return time.monotonic() - t0 if got is True else got
        time.sleep(poll)
    pytest.fail(f"waited {deadline_s:.0f}s for {what}; it did not happen")


def _mid_run(states: dict[str, tuple[str, int]]) -> dict | None:
    """The states if one trial is done and another is running past its first epoch (the kill moment)."""
    done = any(s == "ok" for s, _ in states.values())
    return states if done and any(s == "running" and n >= 1 for s, n in states.values()) else None


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    raw = grid(tmp_path, noise=[{"name": "symmetric", "rates": [0.4]}], seeds=[0, 1], epochs=40,
               subset=None, max_concurrent=1)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    ids = [c.trial_id for c in expand(parse_spec(raw))]
    run = Path(raw["storage"])
    tag = f"lnlbench-test-{uuid.uuid4().hex}"
    ray_tmp = tempfile.mkdtemp(prefix="lnlkill", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(LNLBENCH_TEST_TAG=tag, RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled")
    cmd = [sys.executable, "-m", "lnlbench.cli"]
    driver = subprocess.Popen(cmd + ["run", str(path), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # Waits on events, each with a deadline that scales with the work and says what it waited for:
        # a busy machine makes this test slow, never failed.
        def when(test):
            def ready():
                states = _states(run, ids)
                assert driver.poll() is None, f"the driver ended before it could be killed: {states}"
                return test(states)
            return ready

        started = _wait_for("the driver to start its first trial (Ray start-up included)", 900,
                            when(lambda st: any(s != "pending" for s, _ in st.values())))
        t0 = time.monotonic()
        _wait_for("the first trial's first epoch", 600, when(lambda st: any(n >= 1 for _, n in st.values())))
        epoch_s = max(time.monotonic() - t0, 0.05)  # includes the trial's start-up: generous
        states = _wait_for(f"one trial done and the other past its first epoch (epoch ≈ {epoch_s:.1f}s, "
                           f"started after {started:.0f}s)", max(300.0, 3 * 40 * epoch_s), when(_mid_run))
        ray_processes = _descendants(driver.pid)
        os.kill(driver.pid, signal.SIGKILL)
        _kill_ours(tag, ray_processes)
        finished_before = [tid for tid, (s, _) in states.items() if s == "ok"]
        driver.wait(timeout=30)
        resumed = subprocess.run(cmd + ["resume", str(run), "--quiet"], env=env, capture_output=True,
                                 text=True, timeout=max(600.0, 300 + 3 * 40 * epoch_s))
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finally:
        if driver.poll() is None:
            driver.kill()
        _kill_ours(tag)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert all(s == "ok" for s, _ in _states(run, ids).values())
    assert finished_before and len(finished_before) < len(ids)
    for tid in finished_before:
        assert kinds(run, tid) == ["start", "end"]  # not rerun
    resumed_ids = []
    for tid in set(ids) - set(finished_before):
        ev = events(run, tid)
        starts = [e for e in ev if e["event"] in ("start", "resume")]
        assert all(e["event"] == "resume" and e["epoch"] >= 1 for e in starts[1:])  # continued, not restarted
        assert ev[-1]["event"] == "end"
        resumed_ids += [tid] if len(starts) > 1 else []
    assert resumed_ids  # the trial in flight at the kill continued from its checkpoint


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in rec.items() if not k.endswith("time_s")} for rec in history]


def _table(run: Path, capsys) -> str:
    from lnlbench.cli import main

    capsys.readouterr()
    assert main(["table", str(run)]) == 0
    return capsys.readouterr().out


def test_three_driver_kills_and_resumes_converge_to_the_uninterrupted_table(tmp_path, capsys):
    """A 12-trial digits grid (light executor, one trial at a time): the ``lnlbench run`` driver is killed
    (SIGKILL, with its Ray) after 3, 6 and 9 trials are done, resumed each time; the finished grid has the
    table and the per-trial histories of an uninterrupted run, and no finished trial ran twice."""
    from lnlbench.engine import run_trial

    raw = grid(tmp_path, executor="light", methods=["ce", "sce"], seeds=[0, 1, 2], epochs=4, subset=10,
               noise=[{"name": "symmetric", "rates": [0.2, 0.4]}], max_concurrent=1)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    cells = expand(parse_spec(raw))
    ids, run = [c.trial_id for c in cells], Path(raw["storage"])
    assert len(ids) == 12
    tag = f"lnlbench-test-{uuid.uuid4().hex}"
    ray_tmp = tempfile.mkdtemp(prefix="lnlcyc", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(LNLBENCH_TEST_TAG=tag, RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled")
    cmd = [sys.executable, "-m", "lnlbench.cli"]
    finished_at_kill: list[set[str]] = []
    checkpointed: list[tuple[str, int]] = []
    try:
        for cycle, kill_after in enumerate((3, 6, 9, None)):
            args = ["run", str(path)] if cycle == 0 else ["resume", str(run)]
            driver = subprocess.Popen(cmd + args + ["--quiet"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
            if kill_after is None:
                _, err = driver.communicate(timeout=900)
                assert driver.returncode == 0, err
                break

            def ready(k=kill_after, d=driver):
                states = _states(run, ids)
                assert d.poll() is None, f"the driver ended before {k} trials were done: {states}"
                done = sum(s == "ok" for s, _ in states.values())
                mid_trial = any(s == "running" and n >= 1 for s, n in states.values())
                return states if done >= k and (mid_trial or done >= k + 2) else None

            # A deadline that scales with the work (Ray start-up and 3 more trials on a busy machine).
            states = _wait_for(f"{kill_after} trials done (cycle {cycle})", 900, ready)
            ray_processes = _descendants(driver.pid)
            os.kill(driver.pid, signal.SIGKILL)
            _kill_ours(tag, ray_processes)
            driver.wait(timeout=30)
            finished_at_kill.append({tid for tid, (s, _) in states.items() if s == "ok"})
            # the attempt (pid) of each trial that had a checkpoint when the driver was killed
            for tid, (s, n) in states.items():
                if s == "running" and n >= 1:
                    live = [e for e in events(run, tid) if e["event"] in ("start", "resume")]
                    checkpointed.append((tid, live[-1]["pid"]))
    finally:
        if driver.poll() is None:
            driver.kill()
        _kill_ours(tag)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert all(s == "ok" for s, _ in _states(run, ids).values())
    for tid in finished_at_kill[0]:
        assert kinds(run, tid) == ["start", "end"]  # finished before the first kill: never rerun
    # An attempt killed after its trial's first checkpoint is followed by a resume from it, never by a restart
    # from epoch 0 (an attempt killed before any checkpoint starts again, which is right; one that finished
    # between the snapshot and the kill has its end event).
    for tid in ids:
        starts = [e for e in events(run, tid) if e["event"] in ("start", "resume")]
        assert starts[0]["event"] == "start" and all(e["epoch"] >= 1 for e in starts if e["event"] == "resume")
    for tid, pid in checkpointed:
        ev = events(run, tid)
        if any(e["event"] == "end" and e["pid"] == pid for e in ev):
            continue
        attempts = [e for e in ev if e["event"] in ("start", "resume")]
        after = attempts[[e["pid"] for e in attempts].index(pid) + 1]
        assert after["event"] == "resume" and after["epoch"] >= 1, (tid, attempts)
    # The uninterrupted run, in this process with the workers' thread count (float sums differ otherwise).
    ref, threads = tmp_path / "ref", torch.get_num_threads()
    torch.set_num_threads(int(raw["resources"]["cpus_per_worker"]))
    try:
        for c in cells:
            assert run_trial({**c.config, "out_dir": str(ref / "trials")})["status"] == "ok"
    finally:
        torch.set_num_threads(threads)
    for tid in ids:
        assert _strip(result(run, tid)["history"]) == _strip(result(ref, tid)["history"]), tid
    assert _table(run, capsys) == _table(ref, capsys)


def test_worker_killed_by_sigkill_three_times_converges_to_the_uninterrupted_run(faults, tmp_path):
    """A light-executor worker SIGKILLed (by its PID) mid-run, three times over a two-trial grid: each
    attempt is retried from its last checkpoint, and every history and the table equal an uninterrupted
    run's, bit for bit (CPU)."""
    import threading

    from lnlbench.aggregate.cli import board_text
    from lnlbench.aggregate.frame import load_runs
    from lnlbench.engine import run_trial
    from lnlbench.runner.ray_runner import run_grid

    raw = grid(tmp_path, executor="light", noise=[{"name": "symmetric", "rates": [0.4]}], seeds=[0, 1],
               epochs=12, subset=40, max_concurrent=1, max_failures=4)
    spec = parse_spec(raw)
    cells = expand(spec)
    run = Path(spec.storage)
    kills: list[tuple[str, int, int]] = []  # (trial, pid, epochs done when killed)
    stop = threading.Event()

    def killer():
        seen: set[int] = set()
        while not stop.is_set() and len(kills) < 3:
            for c in cells:
                try:
                    ev = events(run, c.trial_id)
                    done = result(run, c.trial_id).get("epochs_done") or 0
                except (OSError, ValueError):
                    continue
                last = ev[-1] if ev else {}
                # the latest attempt has trained at least one epoch of its own: kill its worker process
                if last.get("event") in ("start", "resume") and last["pid"] not in seen \
                        and done >= last["epoch"] + 1 and done < raw["epochs"] - 1:
                    seen.add(last["pid"])
                    os.kill(last["pid"], signal.SIGKILL)
                    kills.append((c.trial_id, last["pid"], done))
                    break
            time.sleep(0.02)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    try:
        outcome = run_grid(spec, quiet=True)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert outcome.ok, outcome.counts
    assert len(kills) == 3, f"the watcher killed {kills}: the trials finished before it could"
    print(f"killed (trial, pid, epochs done): {kills}")
    for tid, pid, _ in kills:
        ev = events(run, tid)
        after = [e for e in ev if e["event"] == "resume" and e["pid"] != pid]
        assert after and after[0]["epoch"] >= 1  # retried from a checkpoint, not from scratch
    plain = tmp_path / "plain"
    threads = torch.get_num_threads()
    # the uninterrupted run of each cell, in this process, with the worker's thread count (a CPU
    # reduction's order, hence a float loss's last bits, depends on it)
    torch.set_num_threads(raw["resources"]["cpus_per_worker"])
    try:
        results = [run_trial({**c.config, "out_dir": str(plain)}) for c in cells]
    finally:
        torch.set_num_threads(threads)
    for c, res in zip(cells, results):
        assert res["status"] == "ok"
        strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
        assert strip(result(run, c.trial_id)["history"]) == strip(res["history"]), c.label
    assert board_text(load_runs([run / "trials"])) == board_text(load_runs([plain]))


def test_two_train_workers_train_one_trial_data_parallel(ray_session, tmp_path):
    """num_workers: 2 -> one TorchTrainer with two ranks (gloo on CPU); rank 0 alone writes the trial."""
    from lnlbench.runner.ray_runner import run_grid

    spec = parse_spec(grid(tmp_path, noise=[{"name": "symmetric", "rates": [0.4]}], seeds=[0], epochs=3,
                           resources={"num_workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0}))
    (tid,) = (c.trial_id for c in expand(spec))
    outcome = run_grid(spec, quiet=True)
    run = Path(spec.storage)
    assert outcome.ok and outcome.counts["done"] == 1
    res = result(run, tid)
    assert res["status"] == "ok" and res["epochs_done"] == 3
    assert all(rec["world_size"] == 2 for rec in res["history"])
    assert kinds(run, tid) == ["start", "end"]
    assert events(run, tid)[0]["world_size"] == 2


def test_light_executor_refuses_data_parallel_workers(tmp_path):
    from lnlbench.errors import LnlError

    with pytest.raises(LnlError, match="executor: train"):
        parse_spec(grid(tmp_path, executor="light", resources={"num_workers": 2}))


def test_a_missing_trial_checkpoint_is_restored_from_rays(tmp_path):
    from lnlbench.runner.worker import CKPT_FILE, restore_checkpoint

    src, folder = tmp_path / "ray_ckpt", tmp_path / "trial"
    src.mkdir()
    (src / CKPT_FILE).write_bytes(b"ray's copy")
    restore_checkpoint(ray.train.Checkpoint.from_directory(str(src)), folder)
    assert (folder / CKPT_FILE).read_bytes() == b"ray's copy"
    (src / CKPT_FILE).write_bytes(b"older")
    restore_checkpoint(ray.train.Checkpoint.from_directory(str(src)), folder)  # the trial's own one wins
    assert (folder / CKPT_FILE).read_bytes() == b"ray's copy"
