"""Client subcommands of `prunebench`: submit, status, result, cancel, upload, jobs.

`prunebench.cli` registers them with `add_client_commands(subparsers)`; each subcommand sets
`func` (taking the parsed args, returning an exit status). They talk HTTP to a running API
(`PRUNEBENCH_URL`, `PRUNEBENCH_API_KEY`, or `--url` / `--api-key`). With `--json` each prints the
API's JSON on stdout and nothing else there; progress and errors go to stderr.

Exit statuses: 0 ok, 1 the API refused (problem printed on stderr), 2 bad arguments,
3 the job ended failed or canceled (`submit --wait`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from prunebench.client.http import ClientError, JobFailed, PrunebenchClient, items_of
from prunebench.contract import SCORER_NAMES

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_JOB_FAILED = 3

METHODS = ("l1_unstructured", "global_magnitude", "channel")
STATUSES = ("queued", "running", "succeeded", "failed", "canceled")


# -- formatting ------------------------------------------------------------------------------------


def _num(value: Any, fmt: str, missing: str = "-") -> str:
    if value is None:
        return missing
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return missing


def _human_bytes(n: Any) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"  # pragma: no cover


def _human_count(n: Any) -> str:
    if n is None:
        return "-"
    value = float(n)
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _signed(value: Any, fmt: str = "+.4f") -> str:
    return _num(value, fmt)


def _render(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def format_result_table(result: dict[str, Any]) -> str:
    """A plain-text table of a JobResult: one row per sparsity point.

    Columns: target sparsity, achieved sparsity, mAP@.5:.95, mAP@.5, Δ mAP vs the dense baseline,
    total ms/image, images/s, nonzero/total params, size on disk. Works on the JSON dict of a
    JobResult (as GET /v1/jobs/{id}/result returns it) or its `model_dump(mode="json")`.
    """
    runs = list(result.get("runs") or [])
    dense = next((r for r in runs if float(r.get("sparsity_target", -1)) == 0.0), None)
    headers = ["sparsity", "achieved", "mAP", "mAP50", "Δ mAP", "ms/img", "img/s", "params", "size"]
    right = [True] * len(headers)
    rows = []
    for run in runs:
        metrics = run.get("metrics") or {}
        speed = run.get("speed_ms_per_image") or {}
        deltas = run.get("deltas") or {}
        if "map" in deltas:
            delta = deltas["map"]
        elif dense is not None and metrics.get("map") is not None:
            delta = float(metrics["map"]) - float((dense.get("metrics") or {}).get("map", 0.0))
        else:
            delta = None
        params = run.get("params")
        nonzero = run.get("nonzero_params")
        params_cell = (
            f"{_human_count(nonzero)}/{_human_count(params)}"
            if nonzero is not None and params is not None and nonzero != params
            else _human_count(params)
        )
        rows.append(
            [
                _num(run.get("sparsity_target"), ".2f"),
                _num(run.get("sparsity"), ".3f"),
                _num(metrics.get("map"), ".4f"),
                _num(metrics.get("map50"), ".4f"),
                _signed(delta),
                _num(speed.get("total"), ".2f"),
                _num(run.get("images_per_second"), ".1f"),
                params_cell,
                _human_bytes(run.get("size_bytes")),
            ]
        )
    table = _render(headers, rows, right)
    lines = []
    checkpoint = result.get("checkpoint") or {}
    dataset = result.get("dataset") or {}
    env = result.get("environment") or {}
    settings = result.get("settings") or {}
    title = []
    if result.get("job_id"):
        title.append(f"job {result['job_id']}")
    if checkpoint.get("name"):
        title.append(f"checkpoint {checkpoint['name']}")
    if dataset.get("name"):
        title.append(f"dataset {dataset['name']}")
    if settings.get("method"):
        title.append(f"method {settings['method']}")
    if title:
        lines.append(", ".join(title))
    if env:
        device = env.get("device_name") or env.get("device") or "?"
        cuda = f", CUDA {env['cuda']}" if env.get("cuda") else ""
        lines.append(f"device {device} (torch {env.get('torch', '?')}{cuda})")
    if result.get("cached"):
        lines.append("(cached result of an identical earlier request)")
    lines.append(table)
    return "\n".join(lines)


def format_jobs_table(jobs: Sequence[dict[str, Any]]) -> str:
    headers = ["id", "status", "progress", "checkpoint", "dataset", "method", "sparsities", "created"]
    rows = []
    for job in jobs:
        req = job.get("request") or {}
        progress = job.get("progress") or {}
        pct = progress.get("percent")
        rows.append(
            [
                str(job.get("id", "")),
                str(job.get("status", "")),
                f"{float(pct):.0f}%" if pct is not None else "-",
                _short(str(req.get("checkpoint", "")), 24),
                str(req.get("dataset", "")),
                str(req.get("method", "")),
                _sparsities_text(req),
                str(job.get("created_at", ""))[:19].replace("T", " "),
            ]
        )
    return _render(headers, rows, [False, False, True, False, False, False, False, False])


def format_job(job: dict[str, Any]) -> str:
    req = job.get("request") or {}
    progress = job.get("progress") or {}
    lines = [
        f"job        {job.get('id')}",
        f"status     {job.get('status')}" + (" (cached)" if job.get("cached") else ""),
        f"checkpoint {req.get('checkpoint')}",
        f"dataset    {req.get('dataset')}",
        f"method     {req.get('method')}",
        f"sparsities {_sparsities_text(req)}",
        f"created    {job.get('created_at')}",
    ]
    if job.get("started_at"):
        lines.append(f"started    {job['started_at']}")
    if job.get("finished_at"):
        lines.append(f"finished   {job['finished_at']}")
    if job.get("status") in ("queued", "running"):
        lines.append(f"progress   {_progress_text(progress)}")
    if job.get("worker"):
        lines.append(f"worker     {job['worker']}")
    if job.get("error"):
        lines.append(f"error      {job['error']}")
    return "\n".join(lines)


def _sparsities_text(req: dict[str, Any]) -> str:
    sparsities = req.get("sparsities")
    if sparsities is None and req.get("sparsity") is not None:
        sparsities = [req["sparsity"]]
    return ",".join(f"{float(s):g}" for s in sparsities or [])


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _progress_text(progress: dict[str, Any]) -> str:
    pct = float(progress.get("percent") or 0.0)
    parts = [f"{pct:5.1f}%", str(progress.get("stage") or "")]
    if progress.get("runs_total"):
        parts.append(f"run {int(progress.get('run_index') or 0) + 1}/{progress['runs_total']}")
    if progress.get("sparsity") is not None:
        parts.append(f"sparsity {float(progress['sparsity']):g}")
    if progress.get("images_total"):
        parts.append(f"{progress.get('images_done', 0)}/{progress['images_total']} images")
    return " ".join(p for p in parts if p)


class ProgressBar:
    """A one-line progress bar on a terminal; plain lines (on change only) when not a terminal."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""

    def job(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        status = str(job.get("status"))
        pct = 100.0 if status == "succeeded" else float(progress.get("percent") or 0.0)
        detail = _progress_text({**progress, "percent": pct}) if status == "running" else f"{pct:5.1f}% {status}"
        self.show(pct, detail)

    def bytes(self, done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        self.show(pct, f"{pct:5.1f}% {_human_bytes(done)} / {_human_bytes(total)}")

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


# -- commands --------------------------------------------------------------------------------------


def parse_sparsities(text: str) -> list[float]:
    values = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {part!r}") from None
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1): {part}")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("give at least one sparsity, e.g. 0,0.3,0.5")
    return values


def _client(args: argparse.Namespace) -> PrunebenchClient:
    return PrunebenchClient(base_url=args.url, api_key=args.api_key)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def _emit(args: argparse.Namespace, payload: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """The API's JSON with --json (for scripts), else the human rendering."""
    if args.json:
        _print_json(payload)
    else:
        print(render(payload))


def _print_problem(error: ClientError) -> None:
    print(f"prunebench: error: {error.message}", file=sys.stderr)
    for item in error.problem.get("errors") or []:
        if isinstance(item, dict):
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            print(f"  {loc}: {item.get('msg', item)}", file=sys.stderr)


def _handles_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except JobFailed as error:
            _print_problem(error)
            if getattr(args, "json", False):
                _print_json(error.problem)
            return EXIT_JOB_FAILED
        except ClientError as error:
            _print_problem(error)
            return EXIT_API_ERROR
        except KeyboardInterrupt:
            print("\ninterrupted (the job keeps running on the server)", file=sys.stderr)
            return 130

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_handles_errors
def cmd_submit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "checkpoint": args.checkpoint,
        "dataset": args.dataset,
        "sparsities": args.sparsities,
        "method": args.method,
    }
    for field in ("img_size", "batch_size", "max_images", "device", "scorer"):
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    if args.save_models:
        body["save_models"] = True
    if args.no_cache:
        body["use_cache"] = False
    if args.no_dense:
        body["include_dense"] = False
    with _client(args) as client:
        job = client.submit(body)
        if not args.wait:
            if args.json:
                _print_json(job)
            else:
                print(job["id"])
                print(f"submitted job {job['id']} ({job.get('status')})", file=sys.stderr)
            return EXIT_OK
        print(f"job {job['id']} submitted", file=sys.stderr)
        bar = None if args.quiet else ProgressBar(sys.stderr)
        try:
            final = client.wait(job["id"], poll_s=args.poll, timeout_s=args.timeout, on_update=bar.job if bar else None)
        finally:
            if bar:
                bar.close()
        if final.get("status") != "succeeded":
            status = str(final.get("status"))
            raise JobFailed(0, f"job {status}", final.get("error") or f"job {job['id']} ended {status}", final)
        result = client.get_result(job["id"])
    _emit(args, result, format_result_table)
    return EXIT_OK


@_handles_errors
def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.get_job(args.job_id)
    _emit(args, job, format_job)
    return EXIT_OK


@_handles_errors
def cmd_result(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.get_result(args.job_id)
    _emit(args, result, format_result_table)
    return EXIT_OK


@_handles_errors
def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel(args.job_id)
    _emit(args, job, lambda j: f"job {j.get('id', args.job_id)}: {j.get('status', 'cancel requested')}")
    return EXIT_OK


@_handles_errors
def cmd_upload(args: argparse.Namespace) -> int:
    bar = None if args.quiet else ProgressBar(sys.stderr)
    try:
        with _client(args) as client:
            info = client.upload_checkpoint(args.file, on_progress=bar.bytes if bar else None)
    except OSError as exc:
        print(f"prunebench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if bar:
            bar.close()
    if args.json:
        _print_json(info)
    else:
        print(info["id"])
        print(
            f"uploaded {info.get('name')}: {info.get('format')}, {info.get('num_classes')} classes, "
            f"{_human_bytes(info.get('size_bytes'))}",
            file=sys.stderr,
        )
    return EXIT_OK


@_handles_errors
def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.list_jobs_page(status=args.status, limit=args.limit, offset=args.offset)
    if args.json:
        _print_json(page)
        return EXIT_OK
    jobs = items_of(page)
    print(format_jobs_table(jobs) if jobs else "no jobs")
    if isinstance(page, dict) and page.get("total") is not None and int(page["total"]) > len(jobs):
        print(f"({len(jobs)} of {page['total']}; use --offset/--limit for more)", file=sys.stderr)
    return EXIT_OK


# -- registration ----------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="API base URL (default: $PRUNEBENCH_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default=None, help="API key (default: $PRUNEBENCH_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON on stdout (for scripts)")


def add_client_commands(subparsers: Any) -> None:
    """Register submit, status, result, cancel, upload and jobs on an argparse subparsers object."""
    p = subparsers.add_parser("submit", help="submit a pruning job (sweep of sparsities)")
    _common(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint id (sha256) or name, see GET /v1/checkpoints")
    p.add_argument("--dataset", required=True, help="dataset name, see GET /v1/datasets")
    p.add_argument("--sparsities", required=True, type=parse_sparsities, help="comma list, e.g. 0,0.3,0.5")
    p.add_argument("--method", choices=METHODS, default="l1_unstructured")
    p.add_argument("--img-size", dest="img_size", type=int, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--max-images", dest="max_images", type=int, default=None)
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--scorer", choices=SCORER_NAMES, default=None, help="COCOeval implementation (default faster_coco_eval)"
    )
    p.add_argument("--save-models", action="store_true", help="keep each pruned model for download")
    p.add_argument("--no-cache", action="store_true", help="do not reuse a stored identical result")
    p.add_argument("--no-dense", action="store_true", help="do not add the dense (0) baseline")
    p.add_argument("--wait", action="store_true", help="wait for the job, show progress, print the result")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between status polls with --wait")
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("status", help="show a job's status and progress")
    _common(p)
    p.add_argument("job_id")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("result", help="print a finished job's result table")
    _common(p)
    p.add_argument("job_id")
    p.set_defaults(func=cmd_result)

    p = subparsers.add_parser("cancel", help="cancel a queued or running job")
    _common(p)
    p.add_argument("job_id")
    p.set_defaults(func=cmd_cancel)

    p = subparsers.add_parser("upload", help="upload a checkpoint; prints its id")
    _common(p)
    p.add_argument("file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_upload)

    p = subparsers.add_parser("jobs", help="list jobs")
    _common(p)
    p.add_argument("--status", choices=STATUSES, default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_jobs)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (`python -m prunebench.cli.client_commands ...`), for when only the client is wanted."""
    parser = argparse.ArgumentParser(prog="prunebench", description="prunebench API client")
    sub = parser.add_subparsers(dest="command", required=True)
    add_client_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
