"""`GET /metrics`: Prometheus text format, for the whole deployment as seen from this API replica.

Two sources, because a deployment is many processes:

- HTTP metrics are this process's own (prometheus-client Counter/Histogram in a per-app registry),
  labelled by route *template* (`/v1/jobs/{job_id}`, never the concrete path: bounded cardinality)
  and status. With several API replicas, scrape each one; Prometheus sums them.
- Everything about jobs and workers is read from Redis at scrape time by `RedisCollector`, so any
  replica reports the same deployment-wide numbers: queue depth and live workers (rq's registries),
  and the job counters, run-time histogram and per-stage seconds that workers and the API record
  in Redis at each transition (prunebench.jobs.metrics). Aggregate those with max(), not sum(),
  across replicas.

No authentication on /metrics, on purpose: Prometheus scrapers rarely carry API keys, and the
numbers hold no job contents. Operators keep the port on the internal network (or block /metrics at
the ingress). If Redis is down the job metrics are left out and `prunebench_redis_up` is 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from prunebench.config import Settings
from prunebench.infra.redis_values import text
from prunebench.jobs import metrics as jobmetrics
from prunebench.jobs import rq_adapter
from prunebench.jobs.keys import Keys

router = APIRouter(include_in_schema=False)


def _num(raw: bytes | str | None) -> float:
    return float(raw) if raw is not None else 0.0


class RedisCollector(Collector):
    """Deployment-wide job and worker metrics, read from Redis on every scrape."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.redis = connection
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        up = GaugeMetricFamily("prunebench_redis_up", "1 when Redis answered this scrape.")
        try:
            families = list(self._from_redis())
        except redis.exceptions.RedisError:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _from_redis(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        keys = Keys(self.settings.redis_prefix)
        queue = rq_adapter.make_queue(self.redis, self.settings.queue_name)
        waiting, in_flight, live = rq_adapter.queue_counts(queue)

        depth = GaugeMetricFamily("prunebench_queue_depth", "Jobs waiting in the queue for a worker.")
        depth.add_metric([], float(waiting))
        yield depth
        running = GaugeMetricFamily("prunebench_jobs_running", "Jobs a worker is executing now.")
        running.add_metric([], float(in_flight))
        yield running
        workers = GaugeMetricFamily("prunebench_workers", "Live rq workers consuming this deployment's queue.")
        workers.add_metric([], float(live))
        yield workers

        counts = self.redis.hgetall(keys.metrics_jobs)
        by_name = {text(k): _num(v) for k, v in counts.items()}
        submitted = CounterMetricFamily("prunebench_jobs_submitted", "Jobs accepted by POST /v1/jobs.")
        submitted.add_metric([], by_name.get("submitted", 0.0))
        yield submitted
        finished = CounterMetricFamily(
            "prunebench_jobs_finished", "Jobs that reached a terminal status.", labels=["status"]
        )
        for status in jobmetrics.OUTCOMES:
            finished.add_metric([status], by_name.get(status, 0.0))
        yield finished

        duration = HistogramMetricFamily(
            "prunebench_job_duration_seconds", "Run time of jobs that ran, by final status.", labels=["status"]
        )
        for status in jobmetrics.OUTCOMES:
            raw = {text(k): _num(v) for k, v in self.redis.hgetall(keys.metrics_duration(status)).items()}
            buckets = [(f"{b:g}", raw.get(jobmetrics.bucket_field(b), 0.0)) for b in jobmetrics.DURATION_BUCKETS_S]
            buckets.append(("+Inf", raw.get("le:+Inf", 0.0)))
            duration.add_metric([status], buckets, raw.get("sum", 0.0))
        yield duration

        stages = CounterMetricFamily(
            "prunebench_stage_seconds", "Wall seconds workers spent in each pipeline stage.", labels=["stage"]
        )
        for stage, seconds in sorted(self.redis.hgetall(keys.metrics_stages).items()):
            stages.add_metric([text(stage)], _num(seconds))
        yield stages


@dataclass(frozen=True)
class HttpInstruments:
    """One app's /metrics registry and the two instruments the HttpMetrics middleware feeds."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram


def instruments(connection: redis.Redis, settings: Settings) -> HttpInstruments:
    """A per-app registry (tests build many apps in one process) with the Redis collector in it."""
    registry = CollectorRegistry()
    requests = Counter(
        "prunebench_http_requests", "HTTP requests served.", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "prunebench_http_request_duration_seconds",
        "HTTP request latency, until the response is complete.",
        ["method", "route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    )
    registry.register(RedisCollector(connection, settings))
    return HttpInstruments(registry, requests, latency)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
