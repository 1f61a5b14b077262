"""lnlbench: a benchmark suite for deep learning with noisy labels."""
__version__ = "0.1.0"
