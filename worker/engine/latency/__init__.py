"""The latency suite: one run's model timed in every asked runtime, with one protocol (see ``protocol``).

``measure_latency(target, runtimes)`` returns one ``LatencyReport`` per runtime and batch size, in the
order asked. A runtime this worker cannot run (no GPU, no TensorRT) gives rows with ``status: skipped``
and the reason; one that fails at a batch size gives ``status: failed`` with the error. Neither fails the
job: the measured rows stand on their own.

Runtimes: ``torch`` (eager, the evaluated model on the job's device and precision), ``onnxruntime_cpu``
(always measurable), ``onnxruntime_cuda`` and ``tensorrt`` (fp16, sparse tactics on; GPU only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prunebench.contract import LatencyReport
from prunebench.worker.engine.latency import eager, ort, trt
from prunebench.worker.engine.latency.protocol import cpu_threads, input_batch, time_step
from prunebench.worker.engine.latency.target import Target

__all__ = ["RUNNERS", "Target", "cpu_threads", "input_batch", "measure_latency", "time_step"]

RUNNERS: dict[str, Callable[[Target], list[LatencyReport]]] = {
    "torch": eager.measure,
    "onnxruntime_cpu": ort.measure_cpu,
    "onnxruntime_cuda": ort.measure_cuda,
    "tensorrt": trt.measure,
}


def measure_latency(target: Target, runtimes: Sequence[str]) -> list[LatencyReport]:
    """Rows for every runtime in ``runtimes`` (each of ``RUNNERS``) and every batch of ``target.batches``."""
    unknown = [r for r in runtimes if r not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNNERS)}")
    rows: list[LatencyReport] = []
    for runtime in runtimes:
        rows.extend(RUNNERS[runtime](target))
    return rows
