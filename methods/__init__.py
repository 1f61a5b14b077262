"""Methods: one file each, registered by import (``lnlbench list methods``)."""
from . import ce, coteaching, dividemix, elr, elr_plus, gce, mixup, mlnt, sce  # noqa: F401
