"""Methods: one file each, registered by import (``lnlbench list methods``)."""
from . import car, ce, coteaching, dividemix, elr, elr_plus, gce, mixup, mlnt, moit, moit_plus, pes, sce, tssd  # noqa: F401
