"""Webhooks: callback URL allow-list, signatures, and delivery with retries (real Redis, real HTTP)."""

from __future__ import annotations

import json
import time

import pytest

from prunebench.config import Settings
from prunebench.contract import JobRequest
from prunebench.jobs.store import JobStore, connect
from prunebench.service.webhooks import SIGNATURE_HEADER, CallbackRefused, Deliverer, check_callback_url, sign, verify
from tests.support.webhook_receiver import webhook_receiver

SECRET = "unit-test-secret"


def hook_settings(settings: Settings, **extra: object) -> Settings:
    update = {"callback_hosts": "127.0.0.1, hooks.example.com", "webhook_secret": SECRET, "webhook_backoff_s": 0.2}
    return settings.model_copy(update={**update, **extra})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "https://hooks.example.com/prunebench?x=1",
        "https://HOOKS.example.com./path",
    ],
)
def test_allowed_callbacks(settings: Settings, url: str) -> None:
    check_callback_url(url, hook_settings(settings))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",  # cloud metadata: not on the list
        "http://localhost:6379/",  # a name for an allowed address is still not the allowed name
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1/hook",
        "http://127.0.0.1:99999/hook",
        "http://hooks.example.com.evil.test/",
        "not a url",
    ],
)
def test_refused_callbacks(settings: Settings, url: str) -> None:
    with pytest.raises(CallbackRefused):
        check_callback_url(url, hook_settings(settings))


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
    hooks = hook_settings(settings)
    connection = connect(hooks)
    store = JobStore(connection, hooks)
    deliverer = Deliverer(connection, hooks)
    with webhook_receiver([500]) as receiver:
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
    hooks = hook_settings(settings, webhook_attempts=2, webhook_backoff_s=0.05)
    connection = connect(hooks)
    store = JobStore(connection, hooks)
    first, second = Deliverer(connection, hooks), Deliverer(connection, hooks)
    with webhook_receiver([503, 503, 503]) as receiver:
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

    hooks = hook_settings(settings)
    connection = connect(hooks)
    store = JobStore(connection, hooks)
    deliverer = Deliverer(connection, hooks)
    with webhook_receiver() as receiver:
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
