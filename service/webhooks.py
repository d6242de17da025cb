"""Job webhooks: validate `callback_url` at submit, deliver signed POSTs when the job ends.

Validation (`check_callback_url`, at submit; 422 otherwise): scheme http or https, no user-info, and
the URL's target in PRUNEBENCH_CALLBACK_HOSTS. Entries name a target, not just a host
(`allowed_targets`): `host` (that host on its scheme's default port, 80 or 443), `host:port`
(either scheme) or `scheme://host[:port]` (that scheme only); host names are compared exactly, so
no other port of an allowed host can be reached. An allow-list, not a block-list, because the API
runs inside the deployment network: any URL a client could name would otherwise let it make the
service POST into Redis, metadata endpoints or internal admin ports (SSRF). Redirects are never
followed at delivery, for the same reason. Callbacks also need PRUNEBENCH_WEBHOOK_SECRET: an unsigned
callback could be forged by anyone who learns the receiver's URL, so without a secret they are refused.

Durability: the terminal transition itself schedules the delivery (prunebench.jobs.events adds the
job id to the `Keys.webhooks_due` sorted set in the same MULTI as the status write), so a delivery is
owed exactly when a job ended, whichever process ended it. A `Deliverer` thread in each API process
claims due entries by pushing their score `LEASE_S` into the future under WATCH (one claimant wins),
POSTs, then removes the entry (delivered, or out of attempts) or re-scores it for the next attempt
with exponential back-off. A replica that dies mid-delivery leaves its lease to expire and another
retries: delivery is at least once; receivers de-duplicate by job id (header X-Prunebench-Delivery).

The body is built once, at the first attempt, from the job resource (without `deliveries`), stored
in `Keys.webhook_body(id)`, and every retry sends the same bytes with the same signature:
`X-Prunebench-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`. Each attempt is recorded
on the job (`deliveries`: attempt, at, event, status_code or error, delivered). A failure without an
HTTP response is recorded as a bare "delivery failed": the client who chose the URL must not learn
whether a port was closed, filtered or slow (connection refused vs timeout); the reason goes to the
API's log for the operator. A job retried after
it ended ends again: that terminal transition resets the body and the attempt budget (a new event).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from prunebench.config import Settings
from prunebench.infra.logging_setup import bound_job
from prunebench.jobs.store import JobNotFound, JobStore, utcnow
from prunebench.service.problems import Problem

log = logging.getLogger("prunebench.service.webhooks")

LEASE_S = 120.0
"""How long a claimed delivery is hidden from other deliverers; longer than any one POST may take."""
IDLE_POLL_S = 0.5
"""Sleep between polls when nothing is due: callback latency vs one ZRANGEBYSCORE per poll."""
SIGNATURE_HEADER = "X-Prunebench-Signature"


class CallbackRefused(ValueError):
    """The callback_url is not one this deployment will call."""


DEFAULT_PORTS = {"http": 80, "https": 443}
DELIVERY_FAILED = "delivery failed"
"""What `deliveries` says when no HTTP response came back, whatever the low-level reason was."""

Target = tuple[str | None, str, int | None]
"""An allow-list entry: (scheme or None for either, host, port or None for the scheme's default)."""


def _host(name: str | None) -> str:
    return (name or "").lower().rstrip(".")


def allowed_targets(settings: Settings) -> set[Target]:
    """PRUNEBENCH_CALLBACK_HOSTS parsed: `host`, `host:port`, `scheme://host[:port]`; `[v6]:port` works.

    Raises ValueError on an entry that is none of these (a bad port, an unknown scheme).
    """
    targets: set[Target] = set()
    for raw in (item.strip() for item in settings.callback_hosts.split(",")):
        if not raw:
            continue
        parts = urlsplit(raw if "://" in raw else f"//{raw}")
        scheme = parts.scheme or None
        if (scheme is not None and scheme not in DEFAULT_PORTS) or not parts.hostname or parts.path:
            raise ValueError(f"PRUNEBENCH_CALLBACK_HOSTS entry {raw!r} is not host, host:port or scheme://host:port")
        targets.add((scheme, _host(parts.hostname), parts.port))
    return targets


def target_allowed(scheme: str, host: str, port: int | None, targets: set[Target]) -> bool:
    """True when an entry allows this scheme, host and port (None: the scheme's default port)."""
    effective = port if port is not None else DEFAULT_PORTS[scheme]
    for allowed_scheme, allowed_host, allowed_port in targets:
        if allowed_host != host or allowed_scheme not in (None, scheme):
            continue
        wanted = allowed_port if allowed_port is not None else DEFAULT_PORTS[allowed_scheme or scheme]
        if wanted == effective:
            return True
    return False


def check_callback_url(url: str, settings: Settings) -> None:
    """Raise CallbackRefused unless `url` is an http(s) URL to an allow-listed host."""
    if not settings.webhook_secret:
        raise CallbackRefused("callbacks are disabled on this deployment (no webhook secret configured)")
    try:
        parts = urlsplit(url)
        host = _host(parts.hostname)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise CallbackRefused(f"callback_url is not a valid URL: {exc}") from exc
    if parts.scheme not in DEFAULT_PORTS:
        raise CallbackRefused("callback_url must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url must not carry credentials")
    try:
        targets = allowed_targets(settings)
    except ValueError as exc:
        log.error("%s", exc)
        raise CallbackRefused("callbacks are misconfigured on this deployment") from exc
    if not host or not target_allowed(parts.scheme, host, port, targets):
        shown = f"{parts.scheme}://{host or '(none)'}:{port if port is not None else DEFAULT_PORTS[parts.scheme]}"
        raise CallbackRefused(f"callback target {shown} is not in this deployment's allow-list")


def require_allowed_callback(url: str | None, settings: Settings) -> None:
    """422 problem at submit for a callback_url this deployment will not call."""
    if url is None:
        return
    try:
        check_callback_url(url, settings)
    except CallbackRefused as exc:
        raise Problem(422, str(exc), kind="callback-refused") from exc


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """What a receiver does (documented; used by the tests): constant-time compare."""
    return hmac.compare_digest(sign(secret, body), signature)


class Deliverer:
    """Delivers due webhooks of one deployment; `run_once` for one step, `start` for a thread."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.redis = connection
        self.settings = settings
        self.store = JobStore(connection, settings)
        self.keys = self.store.keys
        self.due_key = self.keys.webhooks_due
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # No redirects: a 30x to an internal address must not turn a callback into SSRF.
        self.http = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)

    def body_key(self, job_id: str) -> str:
        return self.keys.webhook_body(job_id)

    def attempts_key(self, job_id: str) -> str:
        return self.keys.webhook_attempts(job_id)

    # -- claiming ---------------------------------------------------------------------------------

    def claim(self) -> str | None:
        """One due job id, now leased to us; None when nothing is due or another deliverer won it."""
        now = time.time()
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(self.due_key)
                due = pipe.zrangebyscore(self.due_key, "-inf", now, start=0, num=1)
                if not due:
                    return None
                job_id = due[0].decode() if isinstance(due[0], bytes) else str(due[0])
                pipe.multi()
                pipe.zadd(self.due_key, {job_id: now + LEASE_S}, xx=True)
                pipe.execute()
            except redis.WatchError:
                return None
        return job_id

    # -- one delivery -----------------------------------------------------------------------------

    def _body(self, job_id: str) -> bytes | None:
        stored = self.redis.get(self.body_key(job_id))
        if stored is not None:
            return stored if isinstance(stored, bytes) else str(stored).encode()
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            return None
        data: dict[str, Any] = job.model_dump(mode="json", exclude={"deliveries"})
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        self.redis.set(self.body_key(job_id), body)
        return body

    def _record(self, job_id: str, entry: dict[str, Any]) -> int:
        """Append `entry` to the job's `deliveries`, numbered within this event; returns that number."""
        number = int(self.redis.incr(self.attempts_key(job_id)))
        self.store.append_delivery(job_id, {"attempt": number, **entry})
        return number

    def _finish(self, job_id: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.due_key, job_id)
            pipe.delete(self.body_key(job_id), self.attempts_key(job_id))
            pipe.execute()

    def deliver(self, job_id: str) -> None:
        """One attempt for a claimed job, then remove or re-schedule it."""
        with bound_job(job_id):
            try:
                job = self.store.get(job_id)
            except JobNotFound:
                self._finish(job_id)
                return
            url = job.request.callback_url
            body = self._body(job_id)
            if not url or body is None:
                self._finish(job_id)
                return
            at = utcnow().isoformat()
            # The event is what the body says (the job may have been retried since it ended).
            event = f"job.{json.loads(body).get('status')}"
            entry: dict[str, Any] = {"at": at, "event": event}
            try:
                # Re-checked at delivery: the allow-list or the secret may have changed since submit.
                check_callback_url(url, self.settings)
                assert self.settings.webhook_secret is not None  # check_callback_url ensures it
                response = self.http.post(
                    url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign(self.settings.webhook_secret, body),
                        "X-Prunebench-Event": event,
                        "X-Prunebench-Delivery": job_id,
                        "User-Agent": "prunebench-webhook",
                    },
                )
                entry |= {"status_code": response.status_code, "delivered": response.is_success}
            except CallbackRefused as exc:
                entry |= {"error": str(exc), "delivered": False, "final": True}
            except httpx.HTTPError as exc:
                # Refused, reset, timed out, TLS: one answer for all, so deliveries cannot map ports.
                log.info("webhook for job %s: no HTTP response: %s: %s", job_id, type(exc).__name__, exc)
                entry |= {"error": DELIVERY_FAILED, "delivered": False}
            attempt = self._record(job_id, entry)
            if entry["delivered"] or entry.get("final") or attempt >= self.settings.webhook_attempts:
                self._finish(job_id)
                level = logging.INFO if entry["delivered"] else logging.WARNING
                log.log(
                    level,
                    "webhook for job %s: %s after %d attempt(s)",
                    job_id,
                    "delivered" if entry["delivered"] else "given up",
                    attempt,
                )
                return
            delay = self.settings.webhook_backoff_s * 2 ** (attempt - 1)
            self.redis.zadd(self.due_key, {job_id: time.time() + delay}, xx=True)
            log.info(
                "webhook for job %s: attempt %d failed (%s); retry in %.1fs",
                job_id,
                attempt,
                entry.get("status_code") or entry.get("error"),
                delay,
            )

    def run_once(self) -> bool:
        job_id = self.claim()
        if job_id is None:
            return False
        self.deliver(job_id)
        return True

    # -- the thread -------------------------------------------------------------------------------

    def _loop(self) -> None:
        pause = IDLE_POLL_S
        while not self._stop.is_set():
            try:
                if self.run_once():
                    continue
                pause = IDLE_POLL_S
            except redis.exceptions.RedisError as exc:
                # Redis down: /readyz reports it; back off instead of logging twice a second.
                log.warning("webhook delivery paused: Redis unavailable: %s", exc)
                pause = min(30.0, max(pause * 2, 1.0))
            except Exception:
                # A bug: log and keep the loop alive; the lease brings the entry back later.
                log.exception("webhook delivery loop error")
            self._stop.wait(pause)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="prunebench-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with contextlib.suppress(Exception):
            self.http.close()
