"""Models (registered by import)."""
from . import coteaching_cnn, inception, paper_cnns, resnets, small  # noqa: F401  (importing registers the builders)
from .base import LnlModel

__all__ = ["LnlModel"]
