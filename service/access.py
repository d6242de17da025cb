"""Who may see what: the API's one place for ownership rules.

A principal is the owner name behind the caller's API key (prunebench.service.auth). The rules:

- Jobs: an owner sees, cancels and retries its own jobs; `admin` sees every job.
- Checkpoints: built-in and mounted (models dir) checkpoints are everyone's; an upload is visible to
  each owner who uploaded those bytes, and to `admin`. An owner sees its own view of the upload (the
  name it uploaded it under, its upload time, itself as owner): who else uploaded the same bytes, when
  and under what name is none of its business.
- Datasets: the catalog is everyone's (the caller only needs a valid key).

Anything not visible answers exactly like something that does not exist (404), so no caller learns
what others own.
"""

from __future__ import annotations

from collections.abc import Callable

from prunebench.checkpoints.store import CheckpointStore
from prunebench.contract import CheckpointInfo

ADMIN = "admin"
"""The owner that sees and may cancel or retry everything."""
LOCAL = "local"
"""The principal of every request when authentication is disabled."""


def can_see_job(principal: str, owner: str | None) -> bool:
    """Owners see their own jobs; `admin` sees everything; a job without owner is everyone's."""
    return principal == ADMIN or owner is None or owner == principal


def job_owner_filter(principal: str) -> str | None:
    """The owner a job listing is restricted to: the caller's own, or None (all) for `admin`."""
    return None if principal == ADMIN else principal


def checkpoint_visibility(store: CheckpointStore, principal: str) -> Callable[[CheckpointInfo], bool]:
    """A predicate: may `principal` see this checkpoint?"""

    def visible(info: CheckpointInfo) -> bool:
        return principal == ADMIN or info.source != "upload" or store.is_owner(info, principal)

    return visible


def checkpoint_as_seen_by(store: CheckpointStore, info: CheckpointInfo, principal: str) -> CheckpointInfo | None:
    """The checkpoint as `principal` sees it (an upload: its own view), or None when it may not see it.

    `admin` sees an upload as its first uploader stored it.
    """
    if info.source != "upload" or principal == ADMIN:
        return info
    return store.owner_view(info, principal)


def name_lookup_principal(principal: str) -> str | None:
    """Whose upload names a lookup by file name searches: the caller's own, or (admin) everyone's."""
    return None if principal == ADMIN else principal
