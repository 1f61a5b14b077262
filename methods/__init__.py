"""Methods: one file each, registered by import (``lnlbench list methods``)."""
from . import (  # noqa: F401
    car,
    ce,
    coteaching,
    dividemix,
    elr,
    elr_plus,
    gce,
    mixup,
    mlnt,
    moit,
    moit_plus,
    pes,
    sce,
    tssd,
    unicon,
)
