"""Methods: one file each, registered by import (``lnlbench list methods``)."""
from . import (  # noqa: F401
    apl,
    car,
    ce,
    coteaching,
    coteaching_plus,
    dividemix,
    elr,
    elr_plus,
    gce,
    jocor,
    mixup,
    mlnt,
    moit,
    peer_loss,
    sce,
    tssd,
)
