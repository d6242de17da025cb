"""Where the tests find the project and its bundled demo, and the small job integration tests submit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "common" / "assets" / "demo"
DEMO_CHECKPOINT = DEMO_DIR / "yolov5n_shapes.pt"
SMALL_JOB: dict[str, Any] = {
    "checkpoint": "yolov5n_shapes.pt",
    "dataset": "shapes-val",
    "img_size": 256,
    "batch_size": 8,
    "max_images": 16,
    "device": "cpu",
}
"""A quick job on the bundled demo (256 px, 16 images): what integration tests submit by default."""
