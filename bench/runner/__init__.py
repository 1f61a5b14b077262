"""The grid runner: grid specs (YAML) → Ray Tune over the cells, each trial through Ray Train.

``spec`` and ``status`` import no Ray (``lnlbench run --dry-run`` and ``lnlbench status`` need none);
``ray_runner`` (the driver) and ``worker`` (what runs inside Ray) do. Methods and datasets never see Ray:
the worker calls the plain :func:`lnlbench.engine.run_trial`.
"""
from .resources import Resources
from .spec import Cell, GridSpec, expand, load_spec, parse_spec
from .status import collect

__all__ = ["Cell", "GridSpec", "Resources", "collect", "expand", "load_spec",
           "parse_spec"]
