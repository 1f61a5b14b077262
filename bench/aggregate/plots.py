"""Paper-ready figures (PNG and PDF) from the trials: matplotlib's object API, never ``pyplot``.

Figures are drawn on :class:`matplotlib.figure.Figure` with the Agg canvas, so nothing changes the global
backend and no display is needed. Each method keeps one colour across all figures of a report (the
methods sorted by name, in the ``tab10``/``tab20`` palette). Kinds:

- ``noise``: accuracy (the chosen metric) against the noise rate, one panel per dataset × noise, error bars =
  sample std over seeds; the clean setting (rate 0) is drawn at 0 in every panel.
- ``curves``: test accuracy per epoch, mean over seeds with a ±1 std band; one figure per dataset × noise,
  one panel per rate.
- ``selection``: precision (solid) and recall (dashed) of the clean-sample selection per epoch, for the
  methods that report one; figures as for ``curves``.
- ``compute``: mean device-hours per trial of each method, one bar per dataset (n = trials).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lnlbench.errors import LnlError

from .frame import Runs
from .labels import dataset_name, noise_short, noise_sort_key, rate_text
from .leaderboard import METRIC_TEXT, build_leaderboard

KINDS = ("noise", "curves", "selection", "compute")


def method_colors(methods: list[str]) -> dict[str, tuple]:
    """One colour per method, stable for a given set of methods (sorted by name)."""
    from matplotlib import colormaps

    names = sorted(set(methods))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(names)}


def _run_colors(runs: Runs) -> dict[str, tuple]:
    """The colours of every method of the runs (finished or skipped), the same in every figure."""
    return method_colors([*runs.trials["method"], *runs.skipped["method"]])


def _grid(n: int, width: float = 4.2, height: float = 3.2, sharey: bool = False) -> tuple[Figure, list]:
    """A figure of ``n`` panels, at most 3 per row."""
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _save(fig: Figure, out: Path, stem: str, formats: tuple[str, ...]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        fig.savefig(path, dpi=150)
        fig.set_layout_engine("none")  # keep the positions laid out by the first save: half the cost
        paths.append(path)
    return paths


def _legend(fig: Figure, axes: list) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
            labels[label] = label
    if handles:
        fig.legend(list(handles.values()), list(labels), loc="outside right center", fontsize=8)


def plot_noise(runs: Runs, out: Path, metric: str, formats: tuple[str, ...]) -> list[Path]:
    """Accuracy against the noise rate, one panel per dataset × noise family (synthetic noise only)."""
    board = build_leaderboard(runs.trials, runs.skipped, metric)
    panels = sorted({(c.dataset, c.noise) for c in board.columns if c.rate is not None and c.noise != "none"},
                    key=lambda p: (p[0], noise_sort_key(p[1])))
    if not panels:
        return []
    colors = _run_colors(runs)
    fig, axes = _grid(len(panels), sharey=True)
    dodge = {m: 0.3 * (i - (len(board.methods) - 1) / 2) for i, m in enumerate(board.methods)}
    for ax, (dataset, noise) in zip(axes, panels):
        top = 0.0
        for m in board.methods:
            pts = [(0.0 if c.noise == "none" else c.rate, board.cells[(m, c)]) for c in board.columns
                   if (m, c) in board.cells and c.dataset == dataset and c.noise in (noise, "none")]
            if not pts:
                continue
            pts.sort(key=lambda p: p[0])
            x = [100 * r + dodge[m] for r, _ in pts]  # a small offset keeps error bars apart
            y = [c.mean for _, c in pts]
            err = [c.std or 0.0 for _, c in pts]
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, color=colors[m], label=m)
            top = max(top, x[-1])
        ax.set_xlim(-3, top + 5)
        ax.set_title(f"{dataset_name(dataset)}, {noise_short(noise)}")
        ax.set_xlabel("noise rate (%)")
        ax.set_ylabel(f"test accuracy (%), {metric}")
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle(f"{METRIC_TEXT[metric]}; error bars: std over seeds; methods offset in x", fontsize=9)
    return _save(fig, out, "accuracy_vs_noise", formats)


def _band(ax: Axes, trials: pd.DataFrame, col: str, style: str, color: tuple, label: str) -> None:
    """Mean over seeds per epoch with a ±1 std band (percent)."""
    agg = trials.groupby("epoch")[col].agg(["mean", "std"]).dropna(subset=["mean"])
    if agg.empty:
        return
    x, y = agg.index.to_numpy(), 100 * agg["mean"].to_numpy()
    sd = 100 * np.nan_to_num(agg["std"].to_numpy())
    ax.plot(x, y, style, color=color, lw=1.2, label=label)
    ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.15, lw=0)


def _per_epoch(runs: Runs, out: Path, values: list[tuple[str, str]], stem: str, ylabel: str,
               formats: tuple[str, ...]) -> list[Path]:
    """One figure per dataset × noise, one panel per rate, mean ± std over seeds of per-epoch columns."""
    curves = runs.curves.dropna(subset=[v for v, _ in values], how="all")
    if curves.empty:
        return []
    colors = _run_colors(runs)
    groups = sorted(curves.groupby(["dataset", "noise"]), key=lambda g: (g[0][0], noise_sort_key(g[0][1])))
    paths = []
    for (dataset, noise), part in groups:
        rates = sorted(part["rate"].unique(), key=lambda r: -1 if pd.isna(r) else r)
        fig, axes = _grid(len(rates))
        for ax, rate in zip(axes, rates):
            sub = part[part["rate"].isna()] if pd.isna(rate) else part[part["rate"] == rate]
            for m in sorted(sub["method"].unique()):
                for col, style in values:
                    label = m if len(values) == 1 else f"{m} {col}"
                    _band(ax, sub[sub["method"] == m], col, style, colors[m], label)
            ax.set_title(f"{dataset_name(dataset)}, {noise_short(noise)} {rate_text(rate)}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        _legend(fig, axes)
        fig.suptitle("mean over seeds; band: ±1 std", fontsize=9)
        paths += _save(fig, out, f"{stem}_{dataset}_{noise}", formats)
    return paths


def plot_compute(runs: Runs, out: Path, formats: tuple[str, ...]) -> list[Path]:
    """Mean device-hours per trial of each method, one bar per dataset, labelled with the trial count."""
    t = runs.trials
    if t.empty:
        return []
    mean = t.pivot_table(index="method", columns="dataset", values="device_hours", aggfunc="mean")
    counts = t.pivot_table(index="method", columns="dataset", values="trial_id", aggfunc="count",
                           fill_value=0)
    fig, (ax,) = _grid(1, width=max(5.0, 0.9 * len(mean) * len(mean.columns) + 2), height=3.6)
    width = 0.8 / len(mean.columns)
    x = np.arange(len(mean))
    dcolors = method_colors(list(mean.columns))
    for i, ds in enumerate(mean.columns):
        bars = ax.bar(x + i * width - 0.4 + width / 2, mean[ds].fillna(0).to_numpy(), width,
                      color=dcolors[ds], label=dataset_name(ds))
        ax.bar_label(bars, labels=[f"n={n}" if n else "" for n in counts[ds]], fontsize=7, padding=2)
    ax.set_xticks(x, [m.replace(" [", "\n[") for m in mean.index], rotation=20, ha="right", fontsize=8)
    ax.margins(y=0.12)  # room for the n= labels
    ax.set_ylabel("device-hours per trial (mean)")
    ax.set_xlabel("method")
    devices = ", ".join(sorted(set(t["device_name"].fillna("?"))))
    ax.set_title(f"Compute per trial (devices: {devices}; n = trials)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, "compute", formats)


def make_plots(runs: Runs, kinds: list[str], out: str | Path, metric: str = "last",
               formats: tuple[str, ...] = ("png", "pdf")) -> dict[str, list[Path]]:
    """Draw the asked kinds (see :data:`KINDS`) into ``out``; returns the files written per kind."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise LnlError(f"unknown plot kind '{bad[0]}'; use one of {', '.join(KINDS)} or all")
    out = Path(out)
    written: dict[str, list[Path]] = {}
    for kind in kinds:
        if kind == "noise":
            written[kind] = plot_noise(runs, out, metric, formats)
        elif kind == "curves":
            written[kind] = _per_epoch(runs, out, [("test_acc", "-")], "curves", "test accuracy (%)", formats)
        elif kind == "selection":
            written[kind] = _per_epoch(runs, out, [("precision", "-"), ("recall", "--")], "selection",
                                       "clean-sample selection (%)", formats)
        else:
            written[kind] = plot_compute(runs, out, formats)
    return written
