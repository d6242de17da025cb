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
from collections.abc import Callable
from typing import Any

from prunebench.cli.arguments import (
    add_channel_options,
    add_finetune_options,
    add_runtime_options,
    add_target_options,
    channel_fields,
    finetune_fields,
    parse_sparsities,
    runtime_fields,
    say,
    target_fields,
)
from prunebench.cli.render import ProgressBar, format_job, format_jobs_table, format_result_table, human_bytes
from prunebench.client.http import ClientError, JobFailed, PrunebenchClient
from prunebench.contract import JOB_STATUSES, PRUNE_METHODS, SCORER_NAMES

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_JOB_FAILED = 3


# -- commands --------------------------------------------------------------------------------------


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
    body: dict[str, Any] = {"checkpoint": args.checkpoint, "dataset": args.dataset, "method": args.method}
    try:
        target = target_fields(args)
    except ValueError as exc:
        say(f"prunebench: error: {exc}")
        return EXIT_USAGE
    if (args.sparsities is None) == (not target):
        say("prunebench: error: give exactly one of --sparsities or a budget (--max-map-drop, --max-relative-drop)")
        return EXIT_USAGE
    body.update(target if target else {"sparsities": args.sparsities})
    for field in ("img_size", "batch_size", "max_images", "device", "scorer"):
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    body.update(channel_fields(args))
    body.update(runtime_fields(args))
    try:
        body.update(finetune_fields(args))
    except ValueError as exc:
        say(f"prunebench: error: {exc}")
        return EXIT_USAGE
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
            f"{human_bytes(info.get('size_bytes'))}",
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
    jobs = page["items"]
    print(format_jobs_table(jobs) if jobs else "no jobs")
    if int(page["total"]) > len(jobs):
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
    p.add_argument("--sparsities", type=parse_sparsities, help="comma list, e.g. 0,0.3,0.5 (or a target budget)")
    p.add_argument("--method", choices=PRUNE_METHODS, default="l1_unstructured")
    add_target_options(p)
    add_channel_options(p)
    add_runtime_options(p)
    add_finetune_options(p)
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
    p.add_argument("--status", choices=JOB_STATUSES, default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_jobs)
