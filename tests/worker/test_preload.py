"""A warm worker pays no torch import per job: the rq parent preloads the heavy libraries, never CUDA or the engine."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from prunebench.worker.runner import PRELOAD, preload_heavy_imports
preload_heavy_imports()
import torch
assert all(name in sys.modules for name in PRELOAD), PRELOAD
assert not torch.cuda.is_initialized(), "preloading must not touch CUDA: the horse is forked after it"
assert not [m for m in sys.modules if m.startswith("prunebench.worker.engine")], "the engine stays out of the parent"
print("ok")
"""


def test_preload_imports_the_libraries_without_cuda_or_the_engine() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_preload_is_on_by_default_and_can_be_turned_off(monkeypatch) -> None:
    from prunebench.config import Settings

    assert Settings().worker_preload is True
    monkeypatch.setenv("PRUNEBENCH_WORKER_PRELOAD", "0")
    assert Settings().worker_preload is False
