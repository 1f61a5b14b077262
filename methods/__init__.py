"""Methods: one file each, registered by import (``lnlbench list methods``)."""
from . import (  # noqa: F401
    bootstrap,
    car,
    ce,
    coteaching,
    dividemix,
    elr,
    elr_plus,
    forward,
    gce,
    mixup,
    mlnt,
    moit,
    sce,
    t_revision,
    tssd,
)
