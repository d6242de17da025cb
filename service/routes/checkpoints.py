"""Checkpoints: upload (streamed, inspected without torch), list, look up by id or name."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request, Response
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from prunebench.checkpoints.store import CheckpointError, CheckpointStore, UnknownCheckpoint, is_plain_name
from prunebench.contract import CheckpointInfo, Page
from prunebench.service.access import checkpoint_as_seen_by, checkpoint_visibility, name_lookup_principal
from prunebench.service.deps import CheckpointStoreDep, PrincipalDep, SettingsDep
from prunebench.service.problems import Problem
from prunebench.service.responses import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"], responses=PROBLEM_RESPONSES)

MULTIPART_OVERHEAD = 64 * 1024
"""Allowance for boundaries and part headers on top of max_upload_bytes when checking Content-Length."""


class _FilePart:
    """Streams the multipart field `file` into a temporary file, hashing as it goes.

    Starlette's `request.form()` would spool the whole upload (to memory, then /tmp) before we could
    check its size; this parser writes each chunk once, to the store's own file system, and stops at
    the limit.
    """

    def __init__(self, out: IO[bytes], limit: int) -> None:
        self.out = out
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.filename: str | None = None
        self.found = False
        self.too_large = False
        self._in_file = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._disposition: bytes | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition = None
        self._in_file = False

    def _header_end(self) -> None:
        if bytes(self._header_field).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        if self._disposition is None:
            return
        _, params = parse_options_header(self._disposition)
        if params.get(b"name") == b"file" and not self.found:
            self.found = True
            self._in_file = True
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw else None

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file or self.too_large:
            return
        chunk = data[start:end]
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_large = True
            return
        self.digest.update(chunk)
        self.out.write(chunk)

    def _part_end(self) -> None:
        self._in_file = False


def _clean_name(filename: str | None, sha: str) -> str:
    """The checkpoint's display name: the uploaded file's base name, made safe to show and match."""
    base = os.path.basename((filename or "").replace("\\", "/")).strip()
    base = "".join(ch for ch in base if ch.isprintable())[:200]
    return base if is_plain_name(base) else f"{sha[:12]}.pt"


def _too_large(limit: int) -> Problem:
    return Problem(413, f"checkpoints are limited to {limit} bytes", kind="too-large")


@router.post("", status_code=201, response_model=CheckpointInfo, responses={200: {"model": CheckpointInfo}})
async def upload_checkpoint(
    request: Request, response: Response, store: CheckpointStoreDep, settings: SettingsDep, owner: PrincipalDep
) -> CheckpointInfo:
    """Upload a checkpoint as multipart field `file`: 201 when new to the caller, 200 when it sent these bytes before.

    The answer is the caller's own view: whether anyone else uploaded the same bytes never shows.
    """
    limit = settings.max_upload_bytes
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise Problem(415, "send the checkpoint as multipart/form-data, field 'file'", kind="unsupported-media-type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise _too_large(limit)

    incoming = store.incoming_dir()
    fd, tmp_name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=incoming)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            part = _FilePart(out, limit)
            parser = MultipartParser(boundary, part.callbacks())
            try:
                async for chunk in request.stream():
                    parser.write(chunk)
                    if part.too_large:
                        raise _too_large(limit)
                parser.finalize()
            except MultipartParseError as exc:
                raise Problem(400, f"malformed multipart body: {exc}", kind="bad-multipart") from exc
        if not part.found:
            raise Problem(422, "no multipart field named 'file'", kind="validation")
        if part.size == 0:
            raise Problem(422, "the uploaded file is empty", kind="checkpoint-invalid")
        sha = part.digest.hexdigest()
        try:
            # Inspection parses a pickle and may read a few MB: keep it off the event loop.
            info, created = await run_in_threadpool(store.add_upload, tmp, sha, _clean_name(part.filename, sha), owner)
        except CheckpointError as exc:
            raise Problem(422, f"not a usable checkpoint: {exc}", kind="checkpoint-invalid") from exc
    finally:
        tmp.unlink(missing_ok=True)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/checkpoints/{info.id}"
    return info


@router.get("", response_model=Page[CheckpointInfo])
def list_checkpoints(
    store: CheckpointStoreDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[CheckpointInfo]:
    """The checkpoints the caller may use: built-in, mounted (unusable ones flagged), and its own uploads."""
    visible = checkpoint_visibility(store, principal)
    seen = (
        checkpoint_as_seen_by(store, i, principal) for i in store.list(name_lookup_principal(principal)) if visible(i)
    )
    items = [i for i in seen if i is not None]
    return Page[CheckpointInfo](items=items[offset : offset + limit], total=len(items), limit=limit, offset=offset)


def resolve_visible(store: CheckpointStore, ref: str, principal: str) -> tuple[CheckpointInfo, Path]:
    """The checkpoint `ref` names, as the caller may see it; raises a 404 Problem otherwise."""
    visible = checkpoint_visibility(store, principal)
    try:
        info, path = store.resolve(ref, visible, name_lookup_principal(principal))
    except UnknownCheckpoint as exc:
        raise Problem(404, f"unknown checkpoint {ref!r}: {exc.reason}", kind="unknown-checkpoint") from exc
    seen = checkpoint_as_seen_by(store, info, principal) if visible(info) else None
    if seen is None:
        # The same answer as for an id nobody uploaded: no hint that the checkpoint exists.
        raise Problem(404, f"unknown checkpoint {ref!r}: no such checkpoint", kind="unknown-checkpoint")
    return seen, path


@router.get("/{ref}", response_model=CheckpointInfo)
def get_checkpoint(ref: str, store: CheckpointStoreDep, principal: PrincipalDep) -> CheckpointInfo:
    return resolve_visible(store, ref, principal)[0]
