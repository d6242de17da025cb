"""Webhooks: callback URL allow-list, signatures, and delivery with retries (real Redis, real HTTP)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from prunebench.config import Settings
from prunebench.contract import JobRequest
from prunebench.infra.redis_server import free_port
from prunebench.jobs.store import JobStore, connect
from prunebench.service.webhooks import SIGNATURE_HEADER, CallbackRefused, Deliverer, check_callback_url, sign, verify
from tests.support.webhook_receiver import webhook_receiver

SECRET = "unit-test-secret"


ALLOWED = "127.0.0.1:9, hooks.example.com, https://api.example.org:8443, [::1]:8080"


def hook_settings(settings: Settings, **extra: object) -> Settings:
    update = {"callback_hosts": ALLOWED, "webhook_secret": SECRET, "webhook_backoff_s": 0.2}
    return settings.model_copy(update={**update, **extra})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",  # host:port allows that port, either scheme
        "https://127.0.0.1:9/hook",
        "https://hooks.example.com/prunebench?x=1",  # a bare host allows its scheme's default port
        "http://hooks.example.com/prunebench",
        "https://HOOKS.example.com./path",
        "https://hooks.example.com:443/path",
        "https://api.example.org:8443/hook",  # scheme://host:port allows just that
        "http://[::1]:8080/hook",
    ],
)
def test_allowed_callbacks(settings: Settings, url: str) -> None:
    check_callback_url(url, hook_settings(settings))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",  # cloud metadata: not on the list
        "http://localhost:6379/",  # a name for an allowed address is still not the allowed name
        "http://127.0.0.1:6379/",  # another port of an allowed host:port
        "http://127.0.0.1/hook",  # ... its default port too
        "https://hooks.example.com:8443/",  # a bare host allows no other port
        "http://hooks.example.com:443/",  # http to https's port is not http's default port
        "http://api.example.org:8443/hook",  # the entry names https only
        "https://api.example.org/hook",
        "http://[::1]:6379/",
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1:9/hook",
        "http://127.0.0.1:99999/hook",
        "http://hooks.example.com.evil.test/",
        "not a url",
    ],
)
def test_refused_callbacks(settings: Settings, url: str) -> None:
    with pytest.raises(CallbackRefused):
        check_callback_url(url, hook_settings(settings))


@pytest.mark.parametrize("entry", ["hooks.example.com:http", "ftp://hooks.example.com", "hooks.example.com/path"])
def test_a_malformed_allow_list_entry_refuses_every_callback(settings: Settings, entry: str) -> None:
    with pytest.raises(CallbackRefused, match="misconfigured"):
        check_callback_url("https://hooks.example.com/x", hook_settings(settings, callback_hosts=entry))


def test_no_secret_means_no_callbacks(settings: Settings) -> None:
    with pytest.raises(CallbackRefused, match="disabled"):
        check_callback_url("http://127.0.0.1/hook", hook_settings(settings, webhook_secret=None))


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"id":"x"}'
    signature = sign(SECRET, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(SECRET, body, signature)
    assert not verify(SECRET, body + b" ", signature)
    assert not verify("other", body, signature)


def test_terminal_job_is_delivered_signed_and_retried(settings: Settings) -> None:
    with webhook_receiver([500]) as receiver:
        hooks = hook_settings(settings, callback_hosts=receiver.target)
        connection = connect(hooks)
        store = JobStore(connection, hooks)
        deliverer = Deliverer(connection, hooks)
        request = JobRequest(checkpoint="c", dataset="d", sparsity=0.2, callback_url=receiver.url)
        job = store.create(request, "local")
        assert not deliverer.run_once()  # nothing owed while the job is queued
        store.cancel(job.id)

        assert deliverer.run_once()  # attempt 1: the receiver answers 500
        assert not deliverer.run_once()  # the retry waits out its back-off
        time.sleep(0.3)
        assert deliverer.run_once()  # attempt 2: 200
        assert not deliverer.run_once()  # delivered: nothing left

        first, second = receiver.wait_for(2)
        assert first.body == second.body  # a retry sends the same bytes
        assert verify(SECRET, second.body, second.headers[SIGNATURE_HEADER])
        assert second.headers["X-Prunebench-Delivery"] == job.id
        assert second.headers["X-Prunebench-Event"] == "job.canceled"
        sent = json.loads(second.body)
        assert sent["id"] == job.id and sent["status"] == "canceled" and "deliveries" not in sent

    deliveries = store.get(job.id).deliveries
    assert [(d["attempt"], d["status_code"], d["delivered"]) for d in deliveries] == [(1, 500, False), (2, 200, True)]
    connection.close()


def test_attempts_are_bounded_and_one_claimant_wins(settings: Settings) -> None:
    with webhook_receiver([503, 503, 503]) as receiver:
        hooks = hook_settings(settings, webhook_attempts=2, webhook_backoff_s=0.05, callback_hosts=receiver.target)
        connection = connect(hooks)
        store = JobStore(connection, hooks)
        first, second = Deliverer(connection, hooks), Deliverer(connection, hooks)
        job = store.create(JobRequest(checkpoint="c", dataset="d", sparsity=0.2, callback_url=receiver.url), "o")
        store.cancel(job.id)
        claimed = first.claim()
        assert claimed == job.id
        assert second.claim() is None  # leased to `first`
        first.deliver(job.id)
        time.sleep(0.1)
        assert second.run_once()
        time.sleep(0.2)
        assert not first.run_once() and not second.run_once()  # given up after 2 attempts
        assert len(receiver.requests) == 2
    assert [d["delivered"] for d in store.get(job.id).deliveries] == [False, False]
    connection.close()


def test_a_retried_job_that_ends_again_owes_a_new_callback(settings: Settings) -> None:
    with webhook_receiver() as receiver:
        hooks = hook_settings(settings, callback_hosts=receiver.target)
        connection = connect(hooks)
        store = JobStore(connection, hooks)
        deliverer = Deliverer(connection, hooks)
        job = store.create(JobRequest(checkpoint="c", dataset="d", sparsity=0.2, callback_url=receiver.url), "o")
        store.cancel(job.id)
        assert deliverer.run_once() and not deliverer.run_once()
        store.retry(job.id)
        assert not deliverer.run_once()  # queued again: nothing owed
        store.cancel(job.id)
        assert deliverer.run_once()
        first, second = receiver.wait_for(2)
    assert first.body != second.body  # a new event: rebuilt from the job as it ended this time
    assert json.loads(second.body)["status"] == "canceled"
    deliveries = store.get(job.id).deliveries
    assert [(d["attempt"], d["event"], d["delivered"]) for d in deliveries] == [
        (1, "job.canceled", True),
        (1, "job.canceled", True),
    ]
    connection.close()


def test_delivery_failures_look_alike_whether_the_port_is_closed_or_silent(settings: Settings) -> None:
    closed_port = free_port()  # nothing listens here: connection refused
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never answers: a timeout
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent_port = silent.getsockname()[1]
        hosts = f"127.0.0.1:{closed_port}, 127.0.0.1:{silent_port}"
        hooks = hook_settings(settings, callback_hosts=hosts, webhook_timeout_s=0.3, webhook_attempts=1)
        connection = connect(hooks)
        store = JobStore(connection, hooks)
        deliverer = Deliverer(connection, hooks)
        jobs = []
        for port in (closed_port, silent_port):
            url = f"http://127.0.0.1:{port}/hook"
            job = store.create(JobRequest(checkpoint="c", dataset="d", sparsity=0.2, callback_url=url), "o")
            store.cancel(job.id)
            jobs.append(job.id)
        assert deliverer.run_once() and deliverer.run_once() and not deliverer.run_once()
    recorded = [store.get(job_id).deliveries for job_id in jobs]
    for (entry,) in recorded:
        assert {k: v for k, v in entry.items() if k != "at"} == {
            "attempt": 1,
            "event": "job.canceled",
            "error": "delivery failed",
            "delivered": False,
        }
    connection.close()


def test_an_http_error_status_is_recorded_as_the_status_alone(settings: Settings) -> None:
    with webhook_receiver([502]) as receiver:
        hooks = hook_settings(settings, callback_hosts=receiver.target, webhook_attempts=1)
        connection = connect(hooks)
        store = JobStore(connection, hooks)
        job = store.create(JobRequest(checkpoint="c", dataset="d", sparsity=0.2, callback_url=receiver.url), "o")
        store.cancel(job.id)
        assert Deliverer(connection, hooks).run_once()
    (entry,) = store.get(job.id).deliveries
    assert entry["status_code"] == 502 and entry["delivered"] is False and "error" not in entry
    connection.close()
