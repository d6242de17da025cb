"""Idempotency-Key for POST /v1/jobs: a retried submission returns the job the first one created.

Semantics (README, "Idempotent submission"):

- The key is scoped to its owner: alice's key `k` and bob's key `k` are unrelated.
- The body is compared by the sha256 of its canonical JSON: the *validated* request with defaults
  filled in, keys sorted. So `{"sparsity": 0.2}` and `{"sparsity": 0.2, "method": "l1_unstructured"}`
  are the same body; a body that asks for anything else under the same key is a 422.
- A replay answers 200 with the original job (whatever its status is now) and the header
  `Idempotency-Replayed: true`; the first submission answers 202 as usual.
- Keys are kept `idempotency_ttl_s` (PRUNEBENCH_IDEMPOTENCY_TTL_S, default 24 h) after first use.

Race safety: the first request claims the key with `SET NX` *before* it creates the job, storing
the job id it is about to create. A concurrent duplicate loses the SET NX, reads that id and waits
(briefly) for the job record to appear. A submission that fails after claiming (unknown checkpoint,
Redis error) releases the claim, so the client can retry with the same key.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from prunebench.jobs.keys import Keys

MAX_KEY_LENGTH = 200
WAIT_FOR_OWNER_S = 5.0
"""How long a duplicate waits for the winning request to create the job record before giving up (409)."""


class IdempotencyMismatch(ValueError):
    """The key was used before with a different body."""


class IdempotencyInProgress(RuntimeError):
    """The request that claimed the key has not created its job yet (nor failed)."""


@dataclass(frozen=True)
class Claim:
    job_id: str
    replay: bool
    """True when an earlier request owns the key: answer with its job instead of creating one."""


def body_fingerprint(body: Any) -> str:
    """sha256 of the canonical JSON of a (validated, defaults-filled) request body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def valid_key(key: str) -> bool:
    """1-200 visible ASCII characters (RFC 9110 token-ish; no control characters, no spaces)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all(33 <= ord(ch) <= 126 for ch in key)


class IdempotencyStore:
    """Claims on idempotency keys, as Redis strings named by `Keys.idempotency(owner, key)`."""

    def __init__(self, connection: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = connection
        self.keys = keys
        self.ttl_s = ttl_s

    def redis_key(self, owner: str, key: str) -> str:
        return self.keys.idempotency(owner, key)

    def claim(self, owner: str, key: str, fingerprint: str, new_job_id: str) -> Claim:
        """Claim `key` for a job about to be created as `new_job_id`, or find the job that owns it."""
        name = self.redis_key(owner, key)
        value = json.dumps({"body": fingerprint, "job_id": new_job_id})
        if self.redis.set(name, value, nx=True, ex=self.ttl_s):
            return Claim(new_job_id, replay=False)
        raw = self.redis.get(name)
        if raw is None:
            # Released (the first submission failed) between our SET NX and GET: try once more.
            if self.redis.set(name, value, nx=True, ex=self.ttl_s):
                return Claim(new_job_id, replay=False)
            raw = self.redis.get(name)
            if raw is None:
                raise IdempotencyInProgress(key)
        stored = json.loads(raw)
        if stored["body"] != fingerprint:
            raise IdempotencyMismatch(key)
        return Claim(str(stored["job_id"]), replay=True)

    def release(self, owner: str, key: str, job_id: str) -> None:
        """Drop a claim whose job was never created, only if it is still ours."""
        name = self.redis_key(owner, key)
        raw = self.redis.get(name)
        if raw is not None and json.loads(raw).get("job_id") == job_id:
            self.redis.delete(name)


def wait_for_record(connection: redis.Redis, job_key: str, claim_key: str, timeout_s: float = WAIT_FOR_OWNER_S) -> bool:
    """True once the job record `job_key` exists (the winning duplicate created it); False when the
    winner gave up (its claim is gone) or did not finish within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if connection.exists(job_key):
            return True
        if not connection.exists(claim_key) or time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
