"""Text the `prunebench` command prints: result and job tables, progress lines, a progress bar.

Works on the JSON dicts the API sends (a JobResult's or JobResource's `model_dump(mode="json")` is the
same), so the client commands, the demo and `eval` print the same tables.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

RESULT_HEADERS = ["sparsity", "achieved", "mAP", "mAP50", "Δ mAP", "ms/img", "img/s", "params", "size"]
JOB_HEADERS = ["id", "status", "progress", "checkpoint", "dataset", "method", "sparsities", "created"]


# -- cells ------------------------------------------------------------------------------------------


def _num(value: Any, fmt: str, missing: str = "-") -> str:
    if value is None:
        return missing
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return missing


def human_bytes(n: Any) -> str:
    """`812 B`, `3.72 MB`: binary units (1 KB = 1024 B), two decimals above bytes; `-` for None."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"


def human_count(n: Any) -> str:
    """`1.87M`, `12.3k`, `950`; `-` for None."""
    if n is None:
        return "-"
    value = float(n)
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Columns padded to their widest cell, two spaces apart, a rule of dashes under the header."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


# -- results ----------------------------------------------------------------------------------------


def format_result_table(result: Mapping[str, Any]) -> str:
    """A plain-text table of a JobResult: a title, the device, then one row per sparsity point.

    Columns: target sparsity, achieved sparsity, mAP@.5:.95, mAP@.5, Δ mAP vs the dense baseline,
    total ms/image, images/s, nonzero/total params, size on disk. The result's warnings (data
    normalised or skipped, settings adjusted) follow, one ``warning:`` line each.
    """
    runs = list(result.get("runs") or [])
    dense = next((r for r in runs if float(r.get("sparsity_target", -1)) == 0.0), None)
    rows = [_result_row(run, dense) for run in runs]
    lines = [*_result_title(result), table(RESULT_HEADERS, rows, [True] * len(RESULT_HEADERS))]
    lines.extend(_latency_lines(runs))
    lines.extend(_recovery_lines(runs))
    lines.extend(_search_lines(result.get("search")))
    lines.extend(_sensitivity_lines(result.get("sensitivity")))
    lines.extend(f"warning: {w}" for w in result.get("warnings") or [])
    return "\n".join(lines)


SEARCH_HEADERS = ["#", "sparsity", "split", "images", "mAP", "drop", "within", "objective"]


def _search_lines(search: Mapping[str, Any] | None) -> list[str]:
    """A target job's probes in the order run, then its answer and boundary in words (none: no lines)."""
    if not search:
        return []
    rows = []
    for i, probe in enumerate(search.get("probes") or [], 1):
        mark = ""
        if probe.get("split") == "full" and probe.get("sparsity") == search.get("answer"):
            mark = " answer"
        elif probe.get("split") == "full" and probe.get("sparsity") == search.get("boundary"):
            mark = " boundary"
        rows.append(
            [
                str(i),
                _num(probe.get("sparsity"), "g") + mark,
                str(probe.get("split")),
                str(probe.get("images")),
                _num(probe.get("map"), ".4f"),
                _num(probe.get("drop"), "+.4f"),
                "yes" if probe.get("passed") else "no",
                _num(probe.get("objective"), ".6g"),
            ]
        )
    title = f"target search ({search.get('budget_kind')} {search.get('metric')} drop <= {search.get('budget')})"
    right = [True, True, False, True, True, True, False, True]
    return ["", title, table(SEARCH_HEADERS, rows, right), str(search.get("note") or "")]


def _sensitivity_lines(report: Mapping[str, Any] | None) -> list[str]:
    if not report:
        return []
    return ["", f"sensitivity ({len(report.get('layers') or [])} units): {report.get('note')}"]


RECOVERY_HEADERS = ["sparsity", "recovery", "mAP before", "mAP after", "mAP50 before", "mAP50 after", "epochs", "s"]


def _recovery_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per recovered point: what was applied and mAP before and after it (none: no lines)."""
    rows = []
    for run in runs:
        report = run.get("recovery")
        if not report:
            continue
        rows.append(
            [
                _num(run.get("sparsity_target"), ".2f"),
                " + ".join(report.get("applied") or []),
                _num(report.get("map_before"), ".4f"),
                _num(report.get("map_after"), ".4f"),
                _num(report.get("map50_before"), ".4f"),
                _num(report.get("map50_after"), ".4f"),
                _num(report.get("epochs"), ".0f"),
                _num(report.get("seconds"), ".1f"),
            ]
        )
    if not rows:
        return []
    right = [True, False, *([True] * (len(RECOVERY_HEADERS) - 2))]
    return ["", "recovery (mAP of the pruned model before and after)", table(RECOVERY_HEADERS, rows, right)]


LATENCY_HEADERS = ["sparsity", "runtime", "batch", "median ms", "p90 ms", "ms/img", "speed-up"]


def _latency_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The latency block, when the job asked for it: one row per run, runtime and batch; then why any
    runtime was not measured, once per runtime."""
    rows: list[list[str]] = []
    why: dict[str, str] = {}
    for run in runs:
        speedups = (run.get("deltas") or {}).get("latency_speedup") or {}
        for r in run.get("latency") or []:
            if r.get("status") != "measured":
                why.setdefault(str(r.get("runtime")), f"{r.get('runtime')}: {r.get('status')}: {r.get('reason')}")
                continue
            up = speedups.get(f"{r.get('runtime')}@{r.get('batch')}")
            rows.append(
                [
                    _num(run.get("sparsity_target"), ".2f"),
                    str(r.get("runtime")),
                    str(r.get("batch")),
                    _num(r.get("median_ms"), ".2f"),
                    _num(r.get("p90_ms"), ".2f"),
                    _num(r.get("ms_per_image"), ".2f"),
                    _num(up, ".2f") + ("x" if up is not None else ""),
                ]
            )
    if not rows and not why:
        return []
    right = [True, False, True, True, True, True, True]
    return ["", "latency (network forward only)", table(LATENCY_HEADERS, rows, right), *why.values()]


def _map_delta(run: Mapping[str, Any], dense: Mapping[str, Any] | None) -> float | None:
    """The run's Δ mAP@.5:.95 against the dense baseline: the worker's own, else computed here."""
    deltas = run.get("deltas") or {}
    if "map" in deltas:
        return float(deltas["map"])
    metrics = run.get("metrics") or {}
    if dense is not None and metrics.get("map") is not None:
        return float(metrics["map"]) - float((dense.get("metrics") or {}).get("map", 0.0))
    return None


def _params_cell(run: Mapping[str, Any]) -> str:
    params, nonzero = run.get("params"), run.get("nonzero_params")
    if nonzero is not None and params is not None and nonzero != params:
        return f"{human_count(nonzero)}/{human_count(params)}"
    return human_count(params)


def _result_row(run: Mapping[str, Any], dense: Mapping[str, Any] | None) -> list[str]:
    metrics = run.get("metrics") or {}
    speed = run.get("speed_ms_per_image") or {}
    return [
        _num(run.get("sparsity_target"), ".2f"),
        _num(run.get("sparsity"), ".3f"),
        _num(metrics.get("map"), ".4f"),
        _num(metrics.get("map50"), ".4f"),
        _num(_map_delta(run, dense), "+.4f"),
        _num(speed.get("total"), ".2f"),
        _num(run.get("images_per_second"), ".1f"),
        _params_cell(run),
        human_bytes(run.get("size_bytes")),
    ]


def _result_title(result: Mapping[str, Any]) -> list[str]:
    """What was measured (job, checkpoint, dataset, method) and where (device, torch, CUDA)."""
    checkpoint = result.get("checkpoint") or {}
    dataset = result.get("dataset") or {}
    env = result.get("environment") or {}
    settings = result.get("settings") or {}
    what = []
    if result.get("job_id"):
        what.append(f"job {result['job_id']}")
    if checkpoint.get("name"):
        what.append(f"checkpoint {checkpoint['name']}")
    if dataset.get("name"):
        what.append(f"dataset {dataset['name']}")
    if settings.get("method"):
        what.append(f"method {settings['method']}")
    lines = [", ".join(what)] if what else []
    if env:
        device = env.get("device_name") or env.get("device") or "?"
        cuda = f", CUDA {env['cuda']}" if env.get("cuda") else ""
        lines.append(f"device {device} (torch {env.get('torch', '?')}{cuda})")
    if result.get("cached"):
        lines.append("(cached result of an identical earlier request)")
    return lines


# -- jobs -------------------------------------------------------------------------------------------


def format_jobs_table(jobs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for job in jobs:
        req = job.get("request") or {}
        pct = (job.get("progress") or {}).get("percent")
        rows.append(
            [
                str(job.get("id", "")),
                str(job.get("status", "")),
                f"{float(pct):.0f}%" if pct is not None else "-",
                _short(str(req.get("checkpoint", "")), 24),
                str(req.get("dataset", "")),
                str(req.get("method", "")),
                sparsities_text(req),
                str(job.get("created_at", ""))[:19].replace("T", " "),
            ]
        )
    return table(JOB_HEADERS, rows, [False, False, True, False, False, False, False, False])


def format_job(job: Mapping[str, Any]) -> str:
    req = job.get("request") or {}
    lines = [
        f"job        {job.get('id')}",
        f"status     {job.get('status')}" + (" (cached)" if job.get("cached") else ""),
        f"checkpoint {req.get('checkpoint')}",
        f"dataset    {req.get('dataset')}",
        f"method     {req.get('method')}",
        f"sparsities {sparsities_text(req)}",
        f"created    {job.get('created_at')}",
    ]
    if job.get("started_at"):
        lines.append(f"started    {job['started_at']}")
    if job.get("finished_at"):
        lines.append(f"finished   {job['finished_at']}")
    if job.get("status") in ("queued", "running"):
        lines.append(f"progress   {progress_text(job.get('progress') or {})}")
    if job.get("worker"):
        lines.append(f"worker     {job['worker']}")
    if job.get("error"):
        lines.append(f"error      {job['error']}")
    return "\n".join(lines)


def sparsities_text(req: Mapping[str, Any]) -> str:
    target = req.get("target")
    if target:
        budget = target.get("max_map_drop")
        budget_text = f"-{budget:g}" if budget is not None else f"-{float(target.get('max_relative_drop') or 0):g}x"
        return f"target {target.get('metric', 'map')}{budget_text}"
    sparsities = req.get("sparsities")
    if sparsities is None and req.get("sparsity") is not None:
        sparsities = [req["sparsity"]]
    return ",".join(f"{float(s):g}" for s in sparsities or [])


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- progress ---------------------------------------------------------------------------------------


def progress_text(progress: Mapping[str, Any]) -> str:
    """`  40.0% evaluating run 2/3 sparsity 0.2 32/120 images` from a Progress (as a dict)."""
    pct = float(progress.get("percent") or 0.0)
    parts = [f"{pct:5.1f}%", str(progress.get("stage") or "")]
    if progress.get("runs_total"):
        run = min(int(progress.get("run_index") or 0) + 1, int(progress["runs_total"]))
        parts.append(f"run {run}/{progress['runs_total']}")
    if progress.get("sparsity") is not None:
        parts.append(f"sparsity {float(progress['sparsity']):g}")
    if progress.get("images_total"):
        parts.append(f"{progress.get('images_done', 0)}/{progress['images_total']} images")
    if progress.get("epoch"):
        parts.append(f"epoch {progress['epoch']}/{progress.get('epochs')}")
        parts.append(f"batch {progress.get('iteration')}/{progress.get('iterations')}")
        loss = progress.get("loss") or {}
        parts.extend(f"{k} {float(v):.4f}" for k, v in loss.items())
    return " ".join(p for p in parts if p)


def progress_line(job: Mapping[str, Any]) -> str:
    """A job's status and progress on one line (the demo and `eval` print these on stderr)."""
    return f"{job.get('status', '?'):9s} {progress_text(job.get('progress') or {})}"


class ProgressBar:
    """A one-line progress bar on a terminal; plain lines (on change only) when not a terminal."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""

    def job(self, job: Mapping[str, Any]) -> None:
        progress = job.get("progress") or {}
        status = str(job.get("status"))
        pct = 100.0 if status == "succeeded" else float(progress.get("percent") or 0.0)
        detail = progress_text({**progress, "percent": pct}) if status == "running" else f"{pct:5.1f}% {status}"
        self.show(pct, detail)

    def bytes(self, done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        self.show(pct, f"{pct:5.1f}% {human_bytes(done)} / {human_bytes(total)}")

    def show(self, pct: float, text: str) -> None:
        pct = max(0.0, min(100.0, pct))
        filled = round(self.width * pct / 100)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {text}"
        if line == self._last:
            return
        self._last = line
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
