"""Read every trial's ``result.json`` under one or more run folders into tidy pandas frames.

Only lnlbench's ``result.json`` files are read (schema ``lnlbench.result/1``, see :mod:`lnlbench.results`;
Ray Tune's own per-trial ``result.json`` files in a run folder are recognised and ignored); never logs,
never Ray state. One row per finished trial (``status == "ok"``). Everything else is *reported and skipped*,
never fatal: a file that is not valid JSON, a file of another schema or missing fields, a trial that failed
or is still running, and a second trial of the same (method, dataset, noise, rate, seed) and the same
configuration — the newest one is kept. Skipped trials whose identity could be read stay in
:attr:`Runs.skipped`, so a table can say that a missing cell is missing *because* its trial failed.

Trials of one method in one (dataset, noise, rate) cell whose configurations differ (hyperparameters,
preset, validation split, subset, data file) are *variants*, not duplicates: each becomes its own row,
``method [key=value, ...]`` naming what differs (``base_method`` keeps the plain name). A grid that sweeps
a hyperparameter therefore shows one row per value instead of averaging them.

Accuracies stay fractions in [0, 1] here, exactly as the engine wrote them; tables convert to percent.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lnlbench.errors import LnlError

from .labels import noise_label, variant_option

SCHEMA_PREFIX = "lnlbench.result/"
KEY = ["method", "dataset", "noise", "rate", "seed"]
TRIAL_COLUMNS = [
    "trial_id", "status", "method", "dataset", "noise", "noise_name", "rate", "seed", "last_acc",
    "best_acc", "selected_acc", "final_acc", "best_epoch", "epochs_done", "epochs", "wall_time_s",
    "device_hours", "device", "device_name", "model", "preset", "uses_clean_data", "uses_true_transition",
    "reconstructed", "reconstruction", "transition_mae",
    "realized_rate", "n_train", "git_commit", "finished_at", "base_method", "variant", "config", "command",
    "path", "amp", "recipe_status", "golden_per_class", "tuned", "cpu",
]
CURVE_COLUMNS = ["trial_id", "method", "dataset", "noise", "rate", "seed", "epoch", "test_acc", "val_acc",
                 "precision", "recall", "selected_fraction", "transition_mae"]


@dataclass
class Problem:
    """A result file that was skipped, and why (one line)."""

    path: str
    reason: str
    dataset: str | None = None  # known when the file could be read
    method: str | None = None

    def __str__(self) -> str:
        return f"skipped {self.path}: {self.reason}"


@dataclass
class Runs:
    """The trials read from some run folders.

    ``trials``: one row per finished trial (:data:`TRIAL_COLUMNS`). ``curves``: one row per trial and epoch
    (:data:`CURVE_COLUMNS`). ``skipped``: identity columns of failed/running/duplicate trials.
    ``problems``: every file skipped, with the reason. ``files``: how many result files were found.
    """

    trials: pd.DataFrame
    curves: pd.DataFrame
    skipped: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    sources: list[str] = field(default_factory=list)
    without_curves: int = 0  # trials read from a trials.csv: no per-epoch history

    def require_trials(self) -> None:
        """Raise a one-line :class:`LnlError` when no finished trial was found."""
        if len(self.trials):
            return
        where = ", ".join(self.sources)
        raise LnlError(f"none of the {self.files} result files under {where} holds a finished trial "
                       f"({len(self.problems)} skipped, see above); wait for the trials or re-run them")


def select(runs: Runs, datasets: list[str] | None = None, methods: list[str] | None = None) -> Runs:
    """The same runs restricted to some datasets and/or methods (None = all)."""
    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        mask = pd.Series(True, index=frame.index)
        if datasets:
            mask &= frame["dataset"].isin(datasets)
        if methods:
            mask &= frame["base_method" if "base_method" in frame else "method"].isin(methods)
        return frame[mask].reset_index(drop=True)

    def relevant(p: Problem) -> bool:
        return not ((datasets and p.dataset and p.dataset not in datasets)
                    or (methods and p.method and p.method not in methods))

    trials = keep(runs.trials)
    curves = runs.curves[runs.curves["trial_id"].isin(trials["trial_id"])].reset_index(drop=True)
    return Runs(trials, curves, keep(runs.skipped),
                [p for p in runs.problems if relevant(p)], runs.files, runs.sources, runs.without_curves)


def find_result_files(paths: list[str | Path]) -> list[Path]:
    """Every ``result.json`` under the given folders (recursively), or the given files themselves."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise LnlError(f"run directory {path} does not exist; pass the --out folder of your trials")
        found = [path] if path.is_file() else sorted(path.rglob("result.json"))
        if not found:
            raise LnlError(f"no result.json files found under {path}; run trials first, "
                           f"e.g. lnlbench trial --out {path}")
        files.extend(found)
    return sorted(set(files))


# Files Ray Tune keeps beside its own per-trial ``result.json`` (JSON lines of reported metrics).
_RAY_TUNE_FILES = ("params.json", "progress.csv", "params.pkl")


def _foreign(path: Path, text: str) -> bool:
    """True for a ``result.json`` lnlbench did not write: Ray Tune's per-trial JSON lines (found by
    ``rglob`` in a run folder), recognised by the folder it lives in or by its first record. A file that
    names lnlbench's schema in its head is ours, however damaged."""
    if SCHEMA_PREFIX in text[:256]:
        return False
    if any((path.parent / name).exists() for name in _RAY_TUNE_FILES):
        return True
    try:
        first = json.loads(text.lstrip().split("\n", 1)[0])
    except ValueError:
        return False
    return isinstance(first, dict) and "training_iteration" in first


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed file, or None and the reason it cannot be used (None and None: not lnlbench's file)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    if _foreign(path, text):
        return None, None
    try:
        res = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at line {exc.lineno}); a partial or damaged file"
    if not isinstance(res, dict):
        return None, "not a result object (the JSON is not a mapping)"
    schema = str(res.get("schema", ""))
    if not schema.startswith(SCHEMA_PREFIX):
        return None, f"unknown schema '{schema}' (expected {SCHEMA_PREFIX}1)"
    missing = [k for k in ("method", "dataset", "noise", "seed", "status") if k not in res]
    if missing:
        return None, f"missing field(s) {', '.join(missing)}"
    return res, None


def _row(res: dict[str, Any], path: Path) -> dict[str, Any]:
    """One tidy row of a parsed result."""
    noise = res.get("noise") or {}
    if not isinstance(noise, dict):
        noise = {"name": str(noise)}
    rate = noise.get("rate")
    flags = res.get("method_flags") or {}
    hp = res.get("hparams") or {}
    data = res.get("data") or {}
    row = {k: res.get(k) for k in TRIAL_COLUMNS if k in res}
    row.update({
        "method": str(res["method"]), "dataset": str(res["dataset"]),
        "noise": res.get("noise_label") or noise_label(noise.get("name", "?"), noise.get("options"), rate),
        "noise_name": noise.get("name"), "rate": float("nan") if rate is None else float(rate),
        "seed": int(res["seed"]), "epochs": hp.get("epochs"), "model": hp.get("model"),
        "uses_clean_data": bool(flags.get("uses_clean_data", False)),
        "uses_true_transition": bool(flags.get("uses_true_transition", False)),
        "reconstructed": bool(flags.get("reconstructed", False)),
        "reconstruction": str(flags.get("reconstruction") or ""),
        "realized_rate": noise.get("realized_rate"), "n_train": data.get("n_train"),
        "base_method": str(res["method"]), "variant": "", "config": _signature(res),
        "command": trial_command(res.get("config") or {}), "path": str(path),
        "amp": recorded_amp(res.get("amp"), res.get("device")),
        "recipe_status": (res.get("recipe") or {}).get("status") if isinstance(res.get("recipe"), dict) else None,
        "golden_per_class": _golden_used(res),
        "tuned": tuned_budget(res.get("recipe")),
    })
    return row


def tuned_budget(recipe: Any) -> str | None:
    """How a ``preset: tuned`` trial's recipe was searched (its result's ``recipe.tuned``), for the footnote:
    ``12 trials per search (scope cell, from mini)``; None for any other trial."""
    tuned = recipe.get("tuned") if isinstance(recipe, dict) else None
    if not isinstance(tuned, dict):
        return None
    budget = tuned.get("budget") or {}
    hours = f" or {budget['hours']:g} h" if budget.get("hours") else ""
    return (f"{budget.get('trials', '?')} trials{hours} per search (scope {tuned.get('scope')}, from "
            f"{tuned.get('base_preset')}; search seeds {tuned.get('seeds')})")


def _golden_used(res: dict[str, Any]) -> int | None:
    """The clean labels per class the trial's method trained on (its golden set, used or added), or None."""
    golden = res.get("golden") if isinstance(res.get("golden"), dict) else {}
    used = golden.get("use") in ("context", "add") and golden.get("per_class") is not None
    return int(golden["per_class"]) if used else None


def _signature(res: dict[str, Any]) -> str:
    """What makes two trials of one cell different experiments (JSON, sorted keys)."""
    cfg = res.get("config") or {}
    noise = res.get("noise") or {}
    opts = noise.get("options") or {}
    skip = (variant_option(str(noise.get("name", ""))), "label_file")
    sig = {**(res.get("hparams") or {}), "preset": res.get("preset"), "val_fraction": cfg.get("val_fraction"),
           "subset": cfg.get("subset"), "data_file": cfg.get("data_file"),
           **{f"golden.{k}": v for k, v in (res.get("golden") or {}).items() if k in ("per_class", "use")},
           **{f"noise.{k}": v for k, v in opts.items() if k not in skip}}
    return json.dumps(sig, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


def label_variants(trials: pd.DataFrame) -> pd.DataFrame:
    """Name the variants (see the module docstring): ``method`` becomes ``method [k=v, ...]`` where one
    cell holds trials of that method with different configurations."""
    trials = trials.copy()
    cells = trials.groupby(["base_method", "dataset", "noise", "rate"], dropna=False).groups
    for (method, *_), idx in cells.items():
        sigs = {s: json.loads(s) for s in trials.loc[idx, "config"].unique()}
        if len(sigs) < 2:
            continue
        spelled = [{k: json.dumps(v, sort_keys=True) for k, v in d.items()} for d in sigs.values()]
        keys = sorted({k for d in spelled for k in d if len({x.get(k) for x in spelled}) > 1})
        for sig, values in sigs.items():
            # a key this configuration leaves unset (null: the default, e.g. no golden set) is not named, so
            # the default configuration keeps the plain method name and one row across the table's cells
            label = ", ".join(f"{k}={_short(values.get(k))}" for k in _shown(keys, values, sigs.values()))
            rows = [i for i in idx if trials.at[i, "config"] == sig]
            if not label:
                continue
            trials.loc[rows, "variant"] = label
            trials.loc[rows, "method"] = f"{method} [{label}]"
    return trials


def _shown(keys: list[str], values: dict[str, Any], every: Any) -> list[str]:
    """The differing keys a variant's label names. Where presets differ, the preset names the row
    (``ce [preset=tuned]`` beside ``ce [preset=paper]``) and the hyperparameters it sets are not spelled
    out, unless two configurations of that same preset differ in them (a sweep over a tuned recipe)."""
    shown = [k for k in keys if values.get(k) is not None]
    if "preset" not in keys:
        return shown
    same = [v for v in every if v.get("preset") == values.get("preset")]
    hparams = {k for k in keys if k not in ("preset", "val_fraction", "subset", "data_file")
               and not k.startswith(("golden.", "noise."))}
    return [k for k in shown if k not in hparams or len({json.dumps(v.get(k)) for v in same}) > 1]


def trial_command(config: dict[str, Any]) -> str:
    """The ``lnlbench trial`` command line that re-runs a trial, from its recorded config."""
    if not config:
        return ""
    parts = ["lnlbench trial", f"--method {config.get('method')}", f"--dataset {config.get('dataset')}",
             f"--noise {config.get('noise')}"]
    if config.get("rate") is not None:
        parts.append(f"--rate {config['rate']:g}")
    parts.append(f"--seed {config.get('seed')}")
    flags = {"preset": ("auto",), "epochs": (None,), "subset": (None,), "val_fraction": (0, 0.0, None),
             "data_file": (None,), "golden_per_class": (None,)}
    for key, defaults in flags.items():
        if config.get(key) not in defaults:
            parts.append(f"--{key.replace('_', '-')} {config[key]}")
    if config.get("golden_add"):
        parts.append("--golden-add")
    hparams = sorted((config.get("hparams") or {}).items())
    parts += [f"--hp {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in hparams]
    options = sorted((config.get("noise_options") or {}).items())
    parts += [f"--noise-opt {shlex.quote(f'{k}={v}')}" for k, v in options]
    if config.get("out_dir"):
        parts.append(f"--out {shlex.quote(str(config['out_dir']))}")
    return " ".join(parts)


def _curves(history: list[dict[str, Any]], row: pd.Series) -> list[dict[str, Any]]:
    """The per-epoch rows of one trial: test/val accuracy, the sample-selection scores and the transition
    estimate's error, if any."""
    out = []
    for h in history:
        sel = h.get("selection") or {}
        out.append({**{k: row[k] for k in CURVE_COLUMNS[:6]}, "epoch": h.get("epoch"),
                    "test_acc": h.get("test_acc"), "val_acc": h.get("val_acc"),
                    "precision": sel.get("precision"), "recall": sel.get("recall"),
                    "selected_fraction": sel.get("selected_fraction"), "transition_mae": h.get("transition_mae")})
    return out


def _status_problem(res: dict[str, Any]) -> str | None:
    status = res.get("status")
    if status == "ok":
        if res.get("last_acc") is None or res.get("best_acc") is None:
            return "status ok but no accuracy recorded (empty history)"
        return None
    if status == "failed":
        err = res.get("error") or {}
        first = (str(err.get("message", "")).splitlines() or [""])[0]
        return f"trial failed ({err.get('type', 'error')}: {first})"
    if status == "running":
        return f"trial still running ({len(res.get('history') or [])} epochs so far); partial, not counted"
    return f"unknown status '{status}'"


def _drop_duplicates(rows: list[dict[str, Any]], problems: list[Problem]) -> list[dict[str, Any]]:
    """Keep the newest finished trial per (method, dataset, noise, rate, seed); report the others."""
    frame = pd.DataFrame(rows).sort_values("finished_at", na_position="first", kind="stable")
    dup = frame.duplicated(subset=[*KEY, "config"], keep="last")
    for _, r in frame[dup].iterrows():
        problems.append(Problem(r["path"], f"duplicate of a newer trial of {r['method']} {r['dataset']} "
                                           f"{r['noise']} {r['rate']:g} seed {r['seed']}; kept the newer",
                                r["dataset"], r["method"]))
    return frame[~dup].to_dict("records")


def load_runs(paths: list[str | Path]) -> Runs:
    """Read all result files under ``paths``; never raises for a bad file (see :class:`Runs`).

    A path may also be a ``trials.csv`` written by an earlier ``lnlbench report`` (:func:`read_trials_csv`):
    its trials join the others, without per-epoch curves."""
    csvs = [Path(p) for p in paths if str(p).endswith(".csv")]
    folders = [p for p in paths if not str(p).endswith(".csv")]
    files = find_result_files(folders) if folders else []
    rows, skipped, problems = [], [], []
    histories: dict[str, list[dict[str, Any]]] = {}
    foreign = 0
    for path in files:
        res, why = _read(path)
        if res is None and why is None:  # Ray Tune's own result.json: not ours, not a problem
            foreign += 1
            continue
        if res is None:
            problems.append(Problem(str(path), why or "unreadable"))
            continue
        try:
            row = _row(res, path)
        except (TypeError, ValueError, AttributeError) as exc:
            problems.append(Problem(str(path), f"malformed field ({type(exc).__name__}: {exc})"))
            continue
        why = _status_problem(res)
        if why:
            problems.append(Problem(str(path), why, row["dataset"], row["method"]))
            skipped.append({k: row[k] for k in [*KEY, "status"]})
            continue
        rows.append(row)
        histories[row["path"]] = res.get("history") or []
    from_csv = 0
    for path in csvs:
        read = read_trials_csv(path)
        rows, from_csv = rows + read, from_csv + len(read)
    if rows:
        rows = _drop_duplicates(rows, problems)
    trials = label_variants(pd.DataFrame(rows, columns=TRIAL_COLUMNS)).sort_values(KEY, ignore_index=True)
    curve_rows = [c for _, r in trials.iterrows() for c in _curves(histories.get(r["path"], []), r)]
    return Runs(trials=trials, curves=pd.DataFrame(curve_rows, columns=CURVE_COLUMNS),
                skipped=pd.DataFrame(skipped, columns=[*KEY, "status"]), problems=problems,
                files=len(files) - foreign + len(csvs), sources=[str(p) for p in paths],
                without_curves=from_csv)


def recorded_amp(amp: Any, device: Any) -> str | None:
    """The precision a trial ran in. Results written before ``amp`` was recorded ran fp32 on a CPU (the
    old ``auto`` used bf16 on CUDA only), so a CPU trial without the field is "off"; a CUDA one is unknown."""
    if isinstance(amp, str) and amp:
        return amp
    return "off" if isinstance(device, str) and device.startswith("cpu") else None


def read_trials_csv(path: str | Path) -> list[dict[str, Any]]:
    """The trial rows of a ``trials.csv`` written by ``lnlbench report`` (its :data:`TRIAL_COLUMNS`).

    Such a file keeps each trial's identity, accuracies, model, preset and configuration signature (the
    resolved hyperparameters) but not its per-epoch history, so tables and published comparisons can be
    rebuilt from it and curve figures cannot. Variant labels are recomputed from ``base_method``; columns
    an older report did not write (``amp``, ``recipe_status``) are empty (unknown)."""
    path = Path(path)
    if not path.is_file():
        raise LnlError(f"trials file {path} does not exist; pass a trials.csv written by lnlbench report")
    frame = pd.read_csv(path, dtype={"git_commit": str, "variant": str, "config": str, "command": str})
    missing = [c for c in ("method", "dataset", "noise", "rate", "seed", "last_acc", "config") if c not in frame]
    if missing:
        raise LnlError(f"{path} lacks column(s) {', '.join(missing)}; pass a trials.csv written by "
                       f"lnlbench report")
    frame = frame.reindex(columns=TRIAL_COLUMNS)
    frame["base_method"] = frame["base_method"].fillna(frame["method"])
    frame["method"], frame["variant"] = frame["base_method"], ""
    frame["status"] = frame["status"].fillna("ok")
    for col in ("uses_clean_data", "uses_true_transition", "reconstructed"):
        frame[col] = frame[col].astype(str).str.lower() == "true"
    frame = frame.astype(object).where(frame.notna(), None)
    frame["rate"] = pd.to_numeric(frame["rate"], errors="coerce")
    frame["seed"] = frame["seed"].astype(int)
    frame["path"] = [old or f"{path}#{tid}" for old, tid in zip(frame["path"], frame["trial_id"])]
    frame["amp"] = [recorded_amp(a, d) for a, d in zip(frame["amp"], frame["device"])]
    return frame.to_dict("records")
