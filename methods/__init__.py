"""Methods: one file each, registered by import (``lnlbench list methods``)."""
from . import ce  # noqa: F401
