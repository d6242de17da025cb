"""prunebench: prune YOLOv5 detectors and measure what pruning costs them."""

__version__ = "0.1.0"
