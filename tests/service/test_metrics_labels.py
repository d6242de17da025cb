"""/metrics label values come from bounded sets, whatever methods and paths clients send."""

from __future__ import annotations

import random
import string

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from prunebench.config import Settings
from prunebench.service.app import create_app

HTTP_SERIES = ("prunebench_http_requests", "prunebench_http_request_duration_seconds")


def http_series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every (sample name, labels) pair of the two HTTP instruments in a /metrics scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(HTTP_SERIES)
    }


def random_token(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase + string.digits, k=rng.randint(3, 12)))


def test_3000_requests_with_random_methods_and_paths_add_a_bounded_number_of_series() -> None:
    # Redis is unreachable on purpose: HTTP metrics are the API's own, and no route here needs Redis.
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth_disabled=True))
    rng = random.Random(11)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/healthz")
        before = http_series(client.get("/metrics").text)
        for i in range(3000):
            path = "/healthz" if i % 2 else f"/{random_token(rng)}/{random_token(rng)}"
            response = client.request(random_token(rng), path)
            assert response.status_code in (404, 405), (path, response.status_code)
        after = client.get("/metrics").text
    series = http_series(after)
    pairs = {(dict(labels)["method"], dict(labels)["route"]) for _, labels in series}
    assert pairs == {("GET", "/healthz"), ("GET", "/metrics"), ("other", "/healthz"), ("other", "unmatched")}
    statuses = {dict(labels).get("status") for _, labels in series} - {None}
    assert statuses == {"200", "404", "405"}
    # 4 (method, route, status) series: a counter (total, created) and a histogram (13 buckets, +Inf,
    # count, sum, created) each; 2 of them existed before the 3,000 requests.
    assert len(before) == 2 + 17 and len(series) == 4 * (2 + 17), len(series)
