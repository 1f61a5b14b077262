"""Tuned recipes: the files ``lnlbench tune`` writes and ``--preset tuned`` / ``preset: tuned`` reads.

One YAML file per (dataset, method), ``<recipes>/<dataset>/<method>.yaml`` (default ``results/recipes``)::

    schema: lnlbench.recipe/1
    method: ce
    dataset: digits
    scope: cell                 # cell: one entry per noise setting | dataset: one entry for all of them
    base_preset: mini           # the preset the search started from
    table:                      # a preset table (lnlbench.hparams), keyed as PRESETS are
      digits/symmetric@0.5:
        hparams: {lr: 0.031, weight_decay: 0.0002}   # the winner: searched values (+ the grid's fixed ones)
        search: {objective: 0.83, trial: ...}
    searches:                   # the record of each search, by the same keys
      digits/symmetric@0.5: {space, budget, trials, objectives, seeds, scope, noise_settings, ...}

``tuned`` is the base preset's recipe for the cell with the table's entry over it: exactly what the winning
search trial trained (the search trials are the base recipe plus the sampled values), so a ``scope:
dataset`` entry keeps the base preset's per-setting entries (DivideMix's λ_u by rate) it was searched
with. A cell the table does not cover is an error naming ``lnlbench tune``, never a fall-back to the
defaults: a "tuned" row is only ever trained with a recipe tuned for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import LnlError
from .files import atomic_write
from .hparams import Recipe

SCHEMA = "lnlbench.recipe/1"
DEFAULT_DIR = "results/recipes"


def recipe_path(recipes: str | Path, dataset: str, method: str) -> Path:
    return Path(recipes).expanduser() / dataset / f"{method}.yaml"


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe file as written (one-line errors for a missing or malformed file)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LnlError(f"no tuned recipe {path}; run `lnlbench tune GRID.yaml` for this method and dataset "
                       "first (or point --recipes at the folder that holds it)") from None
    except yaml.YAMLError as exc:
        raise LnlError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA or not isinstance(raw.get("table"), dict):
        raise LnlError(f"{path} is not a tuned recipe file (schema {SCHEMA}); rewrite it with `lnlbench tune`")
    return raw


def tuned_table(recipes: str | Path, method: str, dataset: str) -> tuple[str, dict[str, Recipe]]:
    """The file's base preset and its table as a preset table of :class:`Recipe` entries."""
    raw = read_recipe(recipe_path(recipes, dataset, method))
    table = {key: Recipe(dict(entry.get("hparams") or {}), dict(entry.get("protocol") or {}))
             for key, entry in raw["table"].items()}
    return str(raw.get("base_preset") or "paper"), table


def tuned_summary(recipes: str | Path, method: str, dataset: str, key: str) -> dict[str, Any]:
    """What ``result.json`` records of the tuned recipe a trial used (its ``recipe.tuned``): the file, the
    entry, the scope and the budget of its search, so a table can footnote how the row was tuned."""
    path = recipe_path(recipes, dataset, method)
    raw = read_recipe(path)
    search = (raw.get("searches") or {}).get(key) or {}
    return {"file": str(path), "key": key, "scope": raw.get("scope"), "budget": search.get("budget"),
            "trials_run": search.get("trials_run"), "seeds": search.get("seeds"),
            "objective": ((raw["table"].get(key) or {}).get("search") or {}).get("objective")}


def write_entry(recipes: str | Path, method: str, dataset: str, scope: str, base_preset: str, key: str,
                entry: dict[str, Any], search: dict[str, Any]) -> Path:
    """Add (or replace) one entry and its search record in the (dataset, method) file; other entries stay.

    A file tuned with the other scope or from another base preset is replaced whole: its entries answer
    another question (one recipe per setting vs one per dataset) and the two must not mix in one table."""
    path = recipe_path(recipes, dataset, method)
    raw: dict[str, Any] = {}
    if path.exists():
        raw = read_recipe(path)
        if raw.get("scope") != scope or raw.get("base_preset") != base_preset:
            raw = {}
    table = dict(raw.get("table") or {})
    searches = dict(raw.get("searches") or {})
    table[key], searches[key] = entry, search
    out = {"schema": SCHEMA, "method": method, "dataset": dataset, "scope": scope, "base_preset": base_preset,
           "table": dict(sorted(table.items())), "searches": dict(sorted(searches.items()))}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, yaml.safe_dump(out, sort_keys=False))
    return path
