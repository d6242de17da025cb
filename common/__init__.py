"""prunebench: prune YOLOv5 detectors and measure what pruning costs them."""

from pathlib import Path

__version__ = "0.1.0"

DEMO_ASSETS = Path(__file__).parent / "assets" / "demo"
"""The bundled demo: `yolov5n_shapes.pt` and the `shapes-val/` COCO dataset (see its README)."""
