"""API keys: who is calling, from `Authorization: Bearer <key>`.

PRUNEBENCH_API_KEYS holds comma-separated `owner:key` pairs. Only the sha256 of each key is kept in
memory after start-up, and a presented key is hashed and compared with every configured hash using
`hmac.compare_digest`, so neither the comparison time nor an early exit reveals how much of a key
matched. Keys are never logged; the owner name is what the rest of the API sees (`principal`).

The owner `admin` sees every job and upload (prunebench.service.access holds who sees what). With
PRUNEBENCH_AUTH_DISABLED=1 every caller is `local` (a single-user machine, the quick start); with auth
on and no keys configured, every /v1 request is refused: a deployment that forgot its keys fails
closed, and says so in its log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prunebench.config import Settings
from prunebench.service.access import LOCAL
from prunebench.service.problems import Problem

log = logging.getLogger("prunebench.api")

bearer = HTTPBearer(
    scheme_name="ApiKey",
    description="An API key from PRUNEBENCH_API_KEYS, sent as `Authorization: Bearer <key>`.",
    # We answer a missing or wrong key ourselves, as a problem+json 401 with a challenge.
    auto_error=False,
)
"""Declares the bearer scheme in the OpenAPI document; `principal_of` does the checking."""

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="prunebench"'}


class KeyConfigError(ValueError):
    """PRUNEBENCH_API_KEYS is malformed (the message never contains a key)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class KeyRing:
    """The configured keys as (owner, sha256(key)) pairs."""

    entries: tuple[tuple[str, bytes], ...]
    disabled: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        entries: list[tuple[str, bytes]] = []
        for number, pair in enumerate((settings.api_keys or "").split(","), start=1):
            pair = pair.strip()
            if not pair:
                continue
            owner, sep, key = pair.partition(":")
            owner, key = owner.strip(), key.strip()
            if not sep or not owner or not key:
                # Position only: the text may be a key with its owner missing.
                raise KeyConfigError(f"PRUNEBENCH_API_KEYS entry {number} is not 'owner:key'")
            entries.append((owner, _digest(key)))
        return cls(tuple(entries), disabled=settings.auth_disabled)

    def owner_of(self, key: str) -> str | None:
        """The owner whose key this is, or None. Compares against every entry, whatever matches."""
        presented = _digest(key)
        found: str | None = None
        for owner, digest in self.entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = owner
        return found


def install(app_state: object, settings: Settings) -> KeyRing:
    """Parse the keys once at start-up, keep them on `app.state.keyring`, warn about a locked-out API."""
    ring = KeyRing.from_settings(settings)
    if ring.disabled:
        log.warning("authentication is DISABLED (PRUNEBENCH_AUTH_DISABLED=1): every caller is %r", LOCAL)
    elif not ring.entries:
        log.warning(
            "no API keys configured (PRUNEBENCH_API_KEYS is empty): every /v1 request will be refused with 401; "
            "set owner:key pairs, or PRUNEBENCH_AUTH_DISABLED=1 for local use"
        )
    else:
        log.info("API keys configured for %d owner(s)", len({owner for owner, _ in ring.entries}))
    app_state.keyring = ring  # type: ignore[attr-defined]
    return ring


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, kind="unauthorized", headers=CHALLENGE)


def principal_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The owner behind the request's bearer key; raises a 401 Problem when there is none.

    `credentials` is what `bearer` parsed (None when the header is missing or not `Bearer <key>`).
    """
    ring: KeyRing | None = getattr(request.app.state, "keyring", None)
    if ring is None:  # an app built without install(): parse the keys on first use
        ring = install(request.app.state, request.app.state.settings)
    if ring.disabled:
        return LOCAL
    if credentials is None:
        if not request.headers.get("authorization"):
            raise _unauthorized("send an API key as 'Authorization: Bearer <key>'")
        raise _unauthorized("the Authorization header must be 'Bearer <key>'")
    key = credentials.credentials.strip()
    if not key:
        raise _unauthorized("the Authorization header must be 'Bearer <key>'")
    owner = ring.owner_of(key)
    if owner is None:
        raise _unauthorized("unknown API key")
    return owner
