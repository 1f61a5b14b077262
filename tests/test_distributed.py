"""Data-parallel trials: two CPU ranks (gloo) in spawned processes, as Ray Train's workers run them.

What must hold: the ranks' gradients are averaged so one step on two half-batches equals one step on the
whole batch; every registered method finishes with identical networks on every rank (no deadlock, no
drift); only rank 0 writes the trial folder; an interrupted two-rank trial resumes to the same history as
an uninterrupted one.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2
TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, job: str, out: str, arg) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        result = globals()[job](rank, Path(out), arg)
        Path(out, f"{job}.rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _spawn(job: str, out: Path, arg=None) -> list:
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, job, str(out), arg)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT_S)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert all(p.exitcode == 0 for p in procs), f"{job}: exit codes {[p.exitcode for p in procs]}"
    return [json.loads(Path(out, f"{job}.rank{r}.json").read_text()) for r in range(WORLD)]


# -- jobs (run in every rank) --------------------------------------------------------------------------
def _checksum(method) -> list[float]:
    from lnlbench.distributed import modules_of

    return [float(t.double().sum()) for m in modules_of(method) for t in m.state_dict().values()
            if t.is_floating_point()]


def grad_job(rank: int, out: Path, arg) -> dict:
    """One step on this rank's half of a batch of 8 vs one local step on the whole batch."""
    from lnlbench.contract import MethodContext, TrainSet

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    train = TrainSet(x=torch.zeros(8, 1, 1, 1, dtype=torch.uint8), y=y)
    ctx = MethodContext(train=train, num_classes=3, image_shape=(1, 1, 1), device=torch.device("cpu"), seed=0,
                        augmenter=None)
    torch.manual_seed(1)
    model, ref = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    (idx,) = list(ctx.batches(8, shuffle=False))
    ctx.step(torch.nn.functional.cross_entropy(model(x[idx]), y[idx]), opt)
    ref_opt.zero_grad()
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    ref_opt.step()
    table = torch.zeros(8)
    table[idx] = rank + 1.0
    ctx.sync_rows(table, idx)
    return {"idx": idx.tolist(), "diff": max(float((a - b).abs().max()) for a, b in
                                             zip(model.parameters(), ref.parameters())),
            "table": table.tolist()}


def _config(out: Path, method: str, **kw):
    from lnlbench.config import TrialConfig
    from lnlbench.registry import METHODS

    hp = {**getattr(METHODS.get(method), "SMOKE", {}), "batch_size": 32}  # main phases within 3 epochs
    return TrialConfig(method=method, dataset="digits", noise="symmetric", rate=0.5, seed=3,
                       epochs=kw.pop("epochs", 3), subset=16, preset="mini", hparams=hp,
                       out_dir=str(out / method), data_root=str(out / "data"), **kw)


def methods_job(rank: int, out: Path, methods: list[str]) -> dict:
    from lnlbench.config import resolve
    from lnlbench.engine import Trial

    sums = {}
    for name in methods:
        trial = Trial(resolve(_config(out, name)), None)
        result = trial.run()
        assert result["status"] == "ok"
        sums[name] = _checksum(trial.method)
    return sums


def resume_job(rank: int, out: Path, arg) -> dict:
    from lnlbench.engine import run_trial

    full = run_trial(_config(out / "full", "ce", epochs=4), raise_on_error=True)

    def stop(epoch, rec, ckpt):
        if epoch == 1:
            raise RuntimeError("stop")
    cut = _config(out / "cut", "ce", epochs=4)
    with pytest.raises(RuntimeError):
        run_trial(cut, raise_on_error=True, on_epoch_end=stop)
    resumed = run_trial(cut, raise_on_error=True)
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    return {"full": strip(full.get("history", [])), "resumed": strip(resumed.get("history", [])),
            "status": resumed["status"]}


def all_jobs(rank: int, out: Path, methods: list[str]) -> dict:
    """Every job in one pair of processes (starting two interpreters costs more than the jobs)."""
    return {"grad": grad_job(rank, out, None), "methods": methods_job(rank, out, methods),
            "resume": resume_job(rank, out, None)}


# -- tests ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    from lnlbench.registry import METHODS

    out = tmp_path_factory.mktemp("ddp")
    return out, _spawn("all_jobs", out, METHODS.names())


def test_two_ranks_average_gradients_and_share_rows(ranks):
    r0, r1 = (r["grad"] for r in ranks[1])
    assert sorted(r0["idx"] + r1["idx"]) == list(range(8))  # disjoint halves of the global batch
    assert len(r0["idx"]) == len(r1["idx"]) == 4
    assert r0["diff"] < 1e-6 and r1["diff"] < 1e-6  # averaged half-batch gradients = whole-batch gradient
    assert r0["table"] == r1["table"] and sorted(set(r0["table"])) == [1.0, 2.0]


def test_every_method_trains_data_parallel(ranks):
    tmp_path, (r0, r1) = ranks[0], (r["methods"] for r in ranks[1])
    assert r0.keys() == r1.keys() and len(r0) >= 8
    for name in r0:
        assert r0[name] == pytest.approx(r1[name], rel=1e-5, abs=1e-6), f"{name}: ranks drifted apart"
        result = json.loads(next((tmp_path / name).glob("*/result.json")).read_text())
        assert result["status"] == "ok" and result["epochs_done"] == 3
        assert all(rec["world_size"] == WORLD and 0 <= rec["test_acc"] <= 1 for rec in result["history"])
        events = [json.loads(x) for x in next((tmp_path / name).glob("*/events.jsonl")).read_text().splitlines()]
        assert [e["event"] for e in events] == ["start", "end"]  # rank 0 alone writes the trial folder


def test_two_rank_trial_resumes_to_the_same_history(ranks):
    r0 = ranks[1][0]["resume"]
    assert r0["status"] == "ok" and len(r0["full"]) == 4
    assert r0["resumed"] == r0["full"]
