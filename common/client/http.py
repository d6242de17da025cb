"""A small typed HTTP client for the prunebench API (used by the `prunebench` client commands).

Configuration comes from the environment unless given explicitly:

    PRUNEBENCH_URL      base URL of the API (default http://127.0.0.1:8000)
    PRUNEBENCH_API_KEY  API key, sent as `Authorization: Bearer <key>`

Every method returns the decoded JSON the API sent. Any non-2xx answer raises ClientError carrying
the RFC 9457 problem details (title, detail, status) the API returned; transport failures raise
ClientError with status 0.

Torch-free, and free of service internals: it talks HTTP only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from prunebench.contract import TERMINAL_STATUSES

DEFAULT_URL = "http://127.0.0.1:8000"

JSON = dict[str, Any]


class ClientError(Exception):
    """The API refused a request (or could not be reached: status 0)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        super().__init__(self.message)

    @property
    def message(self) -> str:
        head = f"{self.status} {self.title}" if self.status else self.title
        return f"{head}: {self.detail}" if self.detail and self.detail != self.title else head

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClientError:
        problem: dict[str, Any] = {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            problem = body
        title = str(problem.get("title") or response.reason_phrase or "HTTP error")
        detail = problem.get("detail")
        if detail is None and not problem:
            text = response.text.strip()
            detail = text[:500] if text else None
        elif detail is not None and not isinstance(detail, str):
            detail = str(detail)  # FastAPI's validation lists, for one
        status = int(problem.get("status") or response.status_code)
        return cls(status, title, detail, problem)


class JobNotFinished(ClientError):
    """GET /v1/jobs/{id}/result answered 409: the job has not finished yet."""


class JobFailed(ClientError):
    """The job ended failed or canceled, so it has no result."""


class PrunebenchClient:
    """Synchronous client for the prunebench HTTP API."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("PRUNEBENCH_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("PRUNEBENCH_API_KEY")
        headers = {"Accept": "application/json", "User-Agent": "prunebench-client"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    # -- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrunebenchClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(0, "cannot reach the prunebench API", f"{self.base_url}: {exc}") from exc
        if response.is_success:
            return response
        error = ClientError.from_response(response)
        if response.status_code == 409 and path.endswith("/result"):
            raise JobNotFinished(error.status, error.title, error.detail, error.problem)
        raise error

    def _page(self, path: str, params: dict[str, Any] | None = None) -> JSON:
        """GET one page of a list route: `{items, total, limit, offset}` (the contract's Page)."""
        page = self._json("GET", path, params=params)
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise ClientError(0, "the API answered a list route without a page", f"GET {path}")
        return page

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(response.status_code, "the API answered with something that is not JSON") from exc

    # -- health ---------------------------------------------------------------------------------

    def health(self) -> JSON:
        return self._json("GET", "/healthz")

    def ready(self) -> JSON:
        return self._json("GET", "/readyz")

    # -- checkpoints and datasets ------------------------------------------------------------------

    def list_checkpoints(self) -> list[JSON]:
        return list(self._page("/v1/checkpoints", {"limit": 1000})["items"])

    def upload_checkpoint(
        self,
        path: str | Path,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> JSON:
        """Upload a checkpoint file (multipart field `file`); returns its CheckpointInfo."""
        path = Path(path)
        total = path.stat().st_size
        with path.open("rb") as fh:
            body = _ProgressReader(fh, total, on_progress) if on_progress else fh
            files = {"file": (path.name, body, "application/octet-stream")}
            # Uploads of big checkpoints may take a while; the read timeout covers server-side checks.
            return self._json("POST", "/v1/checkpoints", files=files, timeout=httpx.Timeout(30.0, read=600.0))

    def list_datasets(self) -> list[JSON]:
        return list(self._page("/v1/datasets", {"limit": 1000})["items"])

    # -- jobs -------------------------------------------------------------------------------------

    def submit(self, request: Mapping[str, Any] | Any) -> JSON:
        """POST /v1/jobs with a JobRequest (model or mapping); returns the JobResource."""
        body = request.model_dump(mode="json", exclude_none=True) if hasattr(request, "model_dump") else request
        return self._json("POST", "/v1/jobs", json=dict(body))

    def list_jobs_page(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> JSON:
        """One page of GET /v1/jobs: `{items, total, limit, offset}`, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self._page("/v1/jobs", params)

    def list_jobs(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[JSON]:
        return list(self.list_jobs_page(status=status, limit=limit, offset=offset)["items"])

    def meta(self) -> JSON:
        """GET /v1/meta: the method names, statuses and stages the API speaks."""
        result: JSON = self._json("GET", "/v1/meta")
        return result

    def get_job(self, job_id: str) -> JSON:
        return self._json("GET", f"/v1/jobs/{_segment(job_id)}")

    def get_result(self, job_id: str) -> JSON:
        """The JobResult; raises JobNotFinished (409) while the job runs, ClientError when it failed."""
        return self._json("GET", f"/v1/jobs/{_segment(job_id)}/result")

    def cancel(self, job_id: str) -> JSON:
        return self._json("DELETE", f"/v1/jobs/{_segment(job_id)}")

    def download_model(self, job_id: str, run_index: int, dest: str | Path) -> Path:
        """Save run `run_index`'s pruned model to `dest` (a file, or a folder to put it in)."""
        dest = Path(dest)
        url = f"/v1/jobs/{_segment(job_id)}/runs/{int(run_index)}/model"
        try:
            with self._http.stream("GET", url, timeout=httpx.Timeout(30.0, read=600.0)) as response:
                if not response.is_success:
                    response.read()
                    raise ClientError.from_response(response)
                if dest.is_dir():
                    dest = dest / _filename(response, f"{job_id}-run{run_index}.pt")
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise ClientError(0, "cannot reach the prunebench API", f"{self.base_url}: {exc}") from exc
        return dest

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_update: Callable[[JSON], None] | None = None,
    ) -> JSON:
        """Poll the job until it reaches a terminal status; returns the final JobResource."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get_job(job_id)
            if on_update:
                on_update(job)
            if job.get("status") in TERMINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(0, "timed out waiting for the job", f"job {job_id} is still {job.get('status')}")
            time.sleep(poll_s)

    def wait_result(self, job_id: str, **wait_kwargs: Any) -> JSON:
        """Wait for the job, then return its JobResult; raises JobFailed when it did not succeed."""
        job = self.wait(job_id, **wait_kwargs)
        if job.get("status") != "succeeded":
            status = str(job.get("status"))
            raise JobFailed(0, f"job {status}", job.get("error") or f"job {job_id} ended {status}", job)
        return self.get_result(job_id)


class _ProgressReader:
    """A file wrapper that reports how many bytes httpx has read for the upload body."""

    def __init__(self, fh: BinaryIO, total: int, callback: Callable[[int, int], None]) -> None:
        self._fh = fh
        self._total = total
        self._done = 0
        self._callback = callback
        self.name = getattr(fh, "name", "upload")

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self._done += len(chunk)
        self._callback(self._done, self._total)
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(64 * 1024):
            yield chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset == 0 and whence == 0:
            self._done = 0
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()


def _segment(value: str) -> str:
    """A path segment: ids never contain slashes, so refuse anything that would change the route."""
    if not value or "/" in value or value in (".", ".."):
        raise ClientError(0, "invalid id", f"{value!r} is not a job id")
    return value


def _filename(response: httpx.Response, fallback: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value:
            name = Path(value.strip().strip('"')).name
            if name and name not in (".", ".."):
                return name
    return fallback
