"""The text report of ``lnlbench perf``: one section per figure, the ratio first, absolute figures beside it.

Reads only the dict that :func:`lnlbench.perf.run_perf` returns (the same one ``--json`` writes), so a saved
JSON file can be rendered again without running anything.
"""
from __future__ import annotations

from typing import Any


def _verdict(value: float | None, target: float, at_most: bool) -> str:
    if value is None:
        return "n/a"
    ok = value <= target if at_most else value >= target
    return f"target {'≤' if at_most else '≥'} {target:g}: {'ok' if ok else 'MISSED'}"


def _net(d: dict[str, Any]) -> str:
    kw = ", ".join(f"{k}={v}" for k, v in (d.get("model_kwargs") or {}).items())
    return f"{d['model']}({kw})" if kw else d["model"]


def header(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    load0, load1 = m["load_average_start"][0], m.get("load_average_end", [float("nan")])[0]
    shared = max(load0, load1) > 1.0
    dev = m["device"] if m["device"] == "cpu" else f"{m['device']} ({m['device_name']})"
    return [f"lnlbench perf ({r['mode']}) on {m['host']}: {dev}; CPU {m['cpu']}, {m['cpus_available']} of "
            f"{m['cpu_count']} cores, {m['torch_threads']} torch threads; torch {m['torch']}; "
            f"commit {m['git_commit'] or '?'}",
            f"load average (1 min) {load0:.2f} at start, {load1:.2f} at end"
            + (" — the machine was shared, timings are noisier than on an idle one" if shared else "")
            + ("; with more busy processes than cores, OMP_NUM_THREADS=1 avoids OpenMP threads waiting on each "
               "other" if max(load0, load1) > m["cpus_available"] and m["torch_threads"] > 1 else "")]


def engine_lines(e: dict[str, Any]) -> list[str]:
    return [f"1. engine overhead: {e['ratio']:.3f}× a bare PyTorch loop ({_verdict(e['ratio'], e['target'], True)})",
            f"   CE training epoch through the engine (MethodContext batches/augment/step) {e['engine_s']:.3f} s vs "
            f"bare loop {e['bare_s']:.3f} s; {_net(e)}, {e['n_train']} images, batch {e['batch_size']} "
            f"({e['steps_per_epoch']} steps), same noisy labels and augmentation on the device; "
            f"median of {e['pairs']} interleaved pairs",
            f"   run_trial's per-epoch bookkeeping: test eval {e['eval_s']:.3f} s ({e['n_test']} images; bare "
            f"{e['bare_eval_s']:.3f} s), checkpoint + result.json {e['save_s']:.3f} s"
            f" -> whole epoch {e['full_epoch_ratio']:.3f}× bare train + eval"]


def augment_lines(a: dict[str, Any]) -> list[str]:
    return [f"2. augmentation: {a['ratio']:.1f}× torchvision's PIL pipeline "
            f"({_verdict(a['ratio'], a['target'], False)} on CPU)",
            f"   on-device batched crop(pad 4)+flip+normalise {a['device_img_s']:,.0f} img/s vs PIL RandomCrop+"
            f"RandomHorizontalFlip+ToTensor+Normalize in a DataLoader ({a['num_workers']} workers) "
            f"{a['pil_img_s']:,.0f} img/s; {a['n_images']} images, batch {a['batch_size']}, median of {a['reps']} "
            f"(loader's first epoch with worker start-up: {a['pil_first_epoch_s']:.2f} s, not counted)"] + (
            [f"   per CPU core: {a['per_core_ratio']:.1f}× ({a['torch_threads']} torch thread(s) vs "
             f"{a['num_workers']} loader worker processes)"] if a.get("device") == "cpu" else [])


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def method_lines(c: dict[str, Any]) -> list[str]:
    rows = c["rows"]
    epochs = ", ".join(str(e) for e in rows[0]["timed_epochs"])
    target = rows[0].get("floor_target")
    lines = [f"3. method cost: one post-warm-up epoch relative to CE and to the method's own compute floor "
             f"({_net(c)}, {c['n_train']} images, {c['recipe']}; timed epoch(s) {epochs}, epoch 0 untimed)",
             "   floor = the bare passes its COMPUTE_FLOOR (compute_floor) declares per optimizer step "
             "(trained rows × B, no-grad rows × B) × the network optimizer steps counted, "
             "+ its whole-train-set forwards"
             + (f"; target ≤ {target:g}× its floor" if target else ""),
             f"   {'method':<14} {'s/epoch':>8} {'× CE':>6} {'floor s':>8} {'× floor':>8} {'batch':>6}  timed"]
    for row in rows:
        fl = row.get("floor_ratio")
        floor_s = f"{row['floor_s']:>8.3f}" if "floor_s" in row else f"{'n/a':>8}"
        mark = "" if fl is None or target is None or fl <= target else " !"
        lines.append(f"   {row['method']:<14} {row['s_per_epoch']:>8.3f} {row['ratio']:>6.2f} {floor_s} "
                     f"{_x(fl) + mark:>8} {row['batch_size']:>6}  {row['note'] or 'as configured'}")
    return lines


def grid_lines(g: dict[str, Any]) -> list[str]:
    if "skipped" in g:
        return [f"4. grid packing: skipped ({g['skipped']})"]
    lines = []
    for ex, x in g["executors"].items():
        t, o = x["mean_trial_s"], x["overhead_per_trial_s"]
        short = "" if t >= 30 else f"; these trials are {t:.0f} s (quick mode), so the overhead weighs more"
        ratio = "n/a" if x["ratio"] is None else f"{x['ratio']:.2f}×"
        lines += [f"4. grid packing ({ex} executor): wall {ratio} ideal (target ≤ {x['target']:g} for trials "
                  f"≥ 30 s{short})",
                  f"   {g['trials']} CE trials ({_net(g)}, {g['n_train']} images, {g['epochs']} epochs: {t:.1f} s of "
                  f"engine epochs each, {x['done']} done) on {g['slots']} slots of {g['cpus_per_trial']} CPU: wall "
                  f"{x['wall_s']:.1f} s vs ideal {x['ideal_s']:.1f} s (Σ trial time ÷ slots)"
                  + (f"; Ray start {g['ray_start_s']:.1f} s not counted" if "ray_start_s" in g else ""),
                  f"   executor overhead {o:.1f} s per trial (start-up, data, Tune/Train, reports): 30 s trials "
                  f"would pack at ≈ {(30 + o) / 30:.2f}×; ≤ {x['target']:g}× needs trials ≥ "
                  f"{o / (x['target'] - 1):.0f} s"]
    return lines


def memory_lines(mem: dict[str, Any]) -> list[str]:
    lines = [f"5. memory: peaks of one {mem['epochs']}-epoch trial per method, each in its own process "
             f"({mem['n_train']} images; start = the process once torch and lnlbench are imported)",
             f"   {'method':<14} {'start MiB':>9} {'peak RSS MiB':>12} {'over start':>10} {'device peak MiB':>15}"]
    for row in mem["rows"]:
        if row.get("status") != "ok":
            lines.append(f"   {row['method']:<14} failed: {row.get('error')}")
            continue
        device = "n/a (CPU)" if row["peak_device_mib"] is None else f"{row['peak_device_mib']:.0f}"
        lines.append(f"   {row['method']:<14} {row['start_rss_mib']:>9.0f} {row['peak_rss_mib']:>12.0f} "
                     f"{row['peak_rss_mib'] - row['start_rss_mib']:>+10.0f} {device:>15}")
    return lines


def streaming_lines(s: dict[str, Any]) -> list[str]:
    j = s["jpeg"]
    per = ", ".join(f"{r['workers']} worker(s) {r['img_s']:,.0f} img/s ({r['per_worker_img_s']:,.0f} per worker)"
                    for r in j["rows"])
    return [f"6. streaming: {s['ratio']:.2f}× the on-device path's images/s (CIFAR-sized, {s['device']})",
            f"   streamed from host memory ({s['num_workers']} DataLoader workers, pinned, moved per batch) "
            f"{s['stream_img_s']:,.0f} img/s vs on the device {s['device_img_s']:,.0f} img/s; {s['n_images']} "
            f"32-px images, batch {s['batch_size']}, crop+flip+normalise on the device, worker start-up counted",
            f"   224-px JPEGs ({j['file_size'][0]}x{j['file_size'][1]} files -> {j['canvas']} canvas -> {j['crop']} "
            f"crop): {per}; {j['n_images']} files, batch {j['batch_size']}"]


def official_lines(c: dict[str, Any]) -> list[str]:
    """``--compare-official``: both sides' seconds and ours ÷ official (below 1: ours faster)."""
    o, f, q = c["ours"], c["official"], c["ratios"]
    lab = lambda s: " + ".join("/".join(str(n) for n in ep) for ep in s.get("labeled", [])[-1:]) or "?"
    rows = [("warm-up epoch", "warmup_epoch_s", "warmup_epoch"), ("DivideMix epoch", "dividemix_epoch_s",
            "dividemix_epoch"), ("  division (2 nets)", "division_s", "division"),
            ("    per-sample loss pass", "loss_pass_s", "loss_pass"), ("    GMM fit + posterior", "gmm_s", "gmm"),
            ("  MixMatch loop (2 nets)", "mixmatch_s", "mixmatch"),
            ("MixMatch iteration", "mixmatch_iteration_s", "mixmatch_iteration")]
    lines = [f"official DivideMix vs ours: {_net(c)}, {c['n_train']} images, identical noisy labels, batch "
             f"{c['batch_size']}, warm-up {c['warm_up']} + {c['epochs']} DivideMix epochs (the first of each "
             f"phase untimed when it has more); official loaders: {c['official_workers']} worker(s) each",
             f"   official code {c['repo']}, patched: {c['patches']}",
             f"   {'':<26} {'ours s':>9} {'official s':>10} {'ours/official':>13}"]
    for name, key, rk in rows:
        a, b = o.get(key), f.get(key)
        lines.append(f"   {name:<26} {a if a is None else f'{a:.3f}':>9} {b if b is None else f'{b:.3f}':>10} "
                     f"{_x(q.get(rk)):>13}")
    lines += [f"   MixMatch iterations per epoch: ours {o.get('iterations', 0):.1f} (last epoch's labelled sets "
              f"{lab(o)}), official {f.get('iterations', 0):.1f} ({lab(f)}); DivideMix epoch at the official's labelled-set "
              f"sizes: {_x(q.get('dividemix_epoch_equal_labeled'))}"]
    return lines


def render(r: dict[str, Any]) -> str:
    """The whole report as text."""
    lines = header(r)
    sections = (("engine_overhead", engine_lines), ("augmentation", augment_lines), ("method_cost", method_lines),
                ("grid_packing", grid_lines), ("memory", memory_lines), ("streaming", streaming_lines),
                ("official", official_lines))
    for key, fn in sections:
        if key in r:
            lines += ["", *fn(r[key])]
    took = ", ".join(f"{key.split('_')[0]} {r[key]['measure_s']:.0f} s" for key, _ in sections
                     if "measure_s" in r.get(key, {}))
    lines += ["", f"perf {r['mode']}: {r['wall_s']:.0f} s in all ({took})"]
    return "\n".join(lines)
