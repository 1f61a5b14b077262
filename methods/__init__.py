"""Methods: one file each, registered by import (``lnlbench list methods``)."""
from . import bootstrap, car, ce, coteaching, dividemix, elr, elr_plus, gce, mixup, mlnt, moit, sce, tssd  # noqa: F401
