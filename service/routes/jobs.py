"""Jobs: submit, list, inspect, fetch results and artifacts, cancel.

Result answers by status (documented in README's API section):

- succeeded: 200 JobResult
- queued / running: 409 `job-not-finished` (poll GET /v1/jobs/{id} until it is terminal)
- failed: 422 `job-failed`, `detail` is the job's one-line error
- canceled: 410 `job-canceled` (there is no result and never will be)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse

from prunebench.checkpoints.store import CheckpointStore
from prunebench.contract import JobRequest, JobResource, JobResult, JobStatus, Page
from prunebench.datasets.catalog import CatalogError, DatasetSpec
from prunebench.jobs import rq_adapter
from prunebench.jobs.store import JobNotFound, JobStore, TransitionRefused, new_job_id
from prunebench.service.access import can_see_job, job_owner_filter
from prunebench.service.deps import CatalogDep, CheckpointStoreDep, JobStoreDep, PrincipalDep, SettingsDep
from prunebench.service.idempotency import (
    IdempotencyInProgress,
    IdempotencyMismatch,
    IdempotencyStore,
    body_fingerprint,
    valid_key,
    wait_for_record,
)
from prunebench.service.problems import Problem
from prunebench.service.responses import PROBLEM_RESPONSES
from prunebench.service.routes.checkpoints import resolve_visible
from prunebench.service.routes.datasets import dataset_info
from prunebench.service.webhooks import require_allowed_callback

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=PROBLEM_RESPONSES)


def _job(store: JobStore, job_id: str, principal: str) -> JobResource:
    try:
        job = store.get(job_id)
    except JobNotFound:
        job = None
    if job is None or not can_see_job(principal, job.owner):
        raise Problem(404, f"no job {job_id!r}", kind="unknown-job")
    return job


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes a retried submission safe: the same key and body return the same job (24 h).",
    ),
]


def _replay(
    store: JobStore, idem: IdempotencyStore, owner: str, key: str, job_id: str, response: Response
) -> JobResource:
    """The job an earlier submission with this key created (waiting briefly if it is still being created)."""
    if not wait_for_record(store.redis, store.keys.job(job_id), idem.redis_key(owner, key)):
        raise Problem(
            409,
            "an earlier request with this Idempotency-Key is still in progress; retry",
            kind="idempotency-in-progress",
        )
    job = _job(store, job_id, owner)
    response.status_code = 200
    response.headers["Idempotency-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


@router.post(
    "",
    status_code=202,
    response_model=JobResource,
    responses={200: {"model": JobResource, "description": "A replay: the job an earlier identical submission created"}},
)
def submit_job(
    request: JobRequest,
    response: Response,
    store: JobStoreDep,
    checkpoints: CheckpointStoreDep,
    catalog: CatalogDep,
    owner: PrincipalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobResource:
    """Queue a job. The checkpoint and dataset must exist now (404 otherwise), not fail later.

    With an `Idempotency-Key`, a repeat of the same body answers 200 with the original job; the same key
    with a different body is a 422 (see prunebench/idempotency.py).
    """
    require_allowed_callback(request.callback_url, settings)  # 422 before anything is claimed or stored
    if idempotency_key is None:
        return _submit(request, response, store, checkpoints, catalog, owner)
    if not valid_key(idempotency_key):
        raise Problem(422, "Idempotency-Key must be 1-200 visible ASCII characters", kind="validation")
    idem = IdempotencyStore(store.redis, store.keys, settings.idempotency_ttl_s)
    try:
        claim = idem.claim(owner, idempotency_key, body_fingerprint(request.model_dump(mode="json")), new_job_id())
    except IdempotencyMismatch as exc:
        raise Problem(
            422, "this Idempotency-Key was used with a different request body", kind="idempotency-key-reused"
        ) from exc
    except IdempotencyInProgress as exc:
        raise Problem(
            409, "a request with this Idempotency-Key is in progress; retry", kind="idempotency-in-progress"
        ) from exc
    if claim.replay:
        return _replay(store, idem, owner, idempotency_key, claim.job_id, response)
    try:
        return _submit(request, response, store, checkpoints, catalog, owner, job_id=claim.job_id)
    except BaseException:
        # Nothing was created: free the key so the client can fix the request and retry under it.
        idem.release(owner, idempotency_key, claim.job_id)
        raise


def _check_dataset(catalog: dict[str, DatasetSpec], name: str) -> None:
    """The named dataset exists (else 404) and can be read (else 422), before a job is queued on it."""
    spec = catalog.get(name)
    if spec is None:
        raise Problem(404, f"unknown dataset {name!r}", kind="unknown-dataset")
    try:
        dataset_info(spec)
    except CatalogError as exc:
        raise Problem(422, str(exc), kind="dataset-unusable") from exc


def _submit(
    request: JobRequest,
    response: Response,
    store: JobStore,
    checkpoints: CheckpointStore,
    catalog: dict[str, DatasetSpec],
    owner: str,
    job_id: str | None = None,
) -> JobResource:
    info, _ = resolve_visible(checkpoints, request.checkpoint, owner)
    for name in request.dataset_names():
        _check_dataset(catalog, name)
    # Pin the checkpoint's id: a mounted file replaced before the job runs must not silently change it.
    job = store.create(request, owner, checkpoint_id=info.id, job_id=job_id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


@router.get("", response_model=Page[JobResource])
def list_jobs(
    store: JobStoreDep,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[JobResource]:
    """The caller's jobs (every job for admin), newest first, with the total count for paging."""
    jobs, total = store.list(status=status, owner=job_owner_filter(principal), limit=limit, offset=offset)
    return Page[JobResource](items=jobs, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobResource)
def get_job(job_id: str, store: JobStoreDep, principal: PrincipalDep) -> JobResource:
    return _job(store, job_id, principal)


@router.get("/{job_id}/result", response_model=JobResult)
def get_result(job_id: str, store: JobStoreDep, principal: PrincipalDep) -> JobResult:
    job = _job(store, job_id, principal)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise Problem(409, f"job {job_id} is {job.status.value}; no result yet", kind="job-not-finished")
    if job.status == JobStatus.FAILED:
        raise Problem(422, job.error or "the job failed", kind="job-failed", title="Job failed")
    if job.status == JobStatus.CANCELED:
        raise Problem(410, f"job {job_id} was canceled; it has no result", kind="job-canceled")
    result = store.get_result(job_id)
    if result is None:
        # Succeeded without a result cannot happen through our transitions; say so rather than 500.
        raise Problem(404, f"the result of job {job_id} is missing from the store", kind="result-missing")
    return result


@router.get("/{job_id}/runs/{k}/model", response_class=FileResponse)
def get_run_model(
    job_id: str, k: int, store: JobStoreDep, settings: SettingsDep, principal: PrincipalDep
) -> FileResponse:
    """The saved pruned model of run `k` (only when the job was submitted with save_models)."""
    job = _job(store, job_id, principal)
    path = settings.artifacts_dir / job.id / f"run-{k}.pt"
    if k < 0 or not path.is_file():
        raise Problem(404, f"job {job_id} has no saved model for run {k}", kind="no-artifact")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{job.id}-run{k}.pt")


@router.get("/{job_id}/runs/{k}/onnx", response_class=FileResponse)
def get_run_onnx(
    job_id: str, k: int, store: JobStoreDep, settings: SettingsDep, principal: PrincipalDep
) -> FileResponse:
    """Run `k`'s model as ONNX (only when the job was submitted with export), checked against PyTorch."""
    job = _job(store, job_id, principal)
    path = settings.artifacts_dir / job.id / f"run-{k}.onnx"
    if k < 0 or not path.is_file():
        raise Problem(404, f"job {job_id} has no ONNX export for run {k}", kind="no-artifact")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{job.id}-run{k}.onnx")


@router.delete(
    "/{job_id}", response_model=JobResource, responses={200: {"model": JobResource}, 202: {"model": JobResource}}
)
def cancel_job(job_id: str, response: Response, store: JobStoreDep, principal: PrincipalDep) -> JobResource:
    """Cancel: a queued job is canceled at once (200); a running one is told to stop (202).

    Either way the record is `canceled` when this returns; a finished job is 409.
    """
    _job(store, job_id, principal)
    try:
        job, before = store.cancel(job_id)
    except TransitionRefused as exc:
        status = exc.current.value if exc.current else "gone"
        raise Problem(409, f"job {job_id} is already {status}", kind="job-finished") from exc
    if before == JobStatus.RUNNING:
        # The engine also sees the status at its next batch (should_stop); this kills a stuck horse.
        rq_adapter.stop_job(store.redis, job_id)
        response.status_code = 202
    else:
        rq_adapter.drop_from_queue(store.redis, job_id)
        response.status_code = 200
    return job


@router.post("/{job_id}/retry", status_code=202, response_model=JobResource)
def retry(job_id: str, response: Response, store: JobStoreDep, principal: PrincipalDep) -> JobResource:
    """Run a failed or canceled job again: back to `queued`, its attempt history kept (202).

    409 while it is queued or running, or once it succeeded; 404 when it is not the caller's.
    """
    _job(store, job_id, principal)
    try:
        job = store.retry(job_id)
    except JobNotFound as exc:
        raise Problem(404, f"no job {job_id!r}", kind="unknown-job") from exc
    except TransitionRefused as exc:
        status = exc.current.value if exc.current else "gone"
        raise Problem(
            409, f"job {job_id} is {status}; only failed or canceled jobs can be retried", kind="job-not-retryable"
        ) from exc
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job
