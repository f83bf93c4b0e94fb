"""Process-wide Prometheus instruments observed as work happens: claim latency, run time, failures by class,
decision wait. The board's numbers (jobs by state, oldest waiting, breaches, spend) are read from the store
at scrape time instead (bot/metrics.py), so they agree across replicas."""

from __future__ import annotations

import functools
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram

from store import clock
from store.models import Decision, Job, RunEnd

#: One registry for the process: every worker and app in it adds to the same counters.
REGISTRY = CollectorRegistry()

#: Buckets from a millisecond (an idle queue's wake-up) to ten minutes (a backlog).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)
#: Agent runs span seconds to an hour.
RUN_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600)
#: People answer in minutes to a day.
DECISION_BUCKETS_S = (1, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)

claim_latency = Histogram(
    "queuebot_claim_latency_seconds",
    "From a job being ready to a worker claiming it",
    ["lane"],
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
run_time = Histogram(
    "queuebot_run_seconds",
    "How long one run of a job took, by type and the state it ended in",
    ["type", "outcome"],
    buckets=RUN_BUCKETS_S,
    registry=REGISTRY,
)
failures = Counter(
    "queuebot_failures",
    "Failed runs by failure class and job type",
    ["failure_class", "type"],
    registry=REGISTRY,
)
decision_wait = Histogram(
    "queuebot_decision_wait_seconds",
    "From a decision being asked to its answer, by how it was answered",
    ["source"],
    buckets=DECISION_BUCKETS_S,
    registry=REGISTRY,
)


def _seconds_since(moment: datetime | None, until: datetime | None = None) -> float:
    if moment is None:
        return 0.0
    return max(0.0, ((until or clock.now()) - moment).total_seconds())


# A labelled child, looked up once: `labels()` costs as much as the rest of a job's bookkeeping here.
@functools.cache
def _claim_latency_of(lane: str) -> Histogram:
    return claim_latency.labels(lane=lane)


@functools.cache
def _run_time_of(job_type: str, outcome: str) -> Histogram:
    return run_time.labels(type=job_type, outcome=outcome)


def job_claimed(job: Job) -> None:
    """A worker claimed `job`: how long it waited while ready."""
    _claim_latency_of(job.lane).observe(_seconds_since(job.run_after, job.started_at))


def run_ended(job: Job, end: RunEnd, elapsed_s: float) -> None:
    """A run of `job` ended as `end` after `elapsed_s`."""
    _run_time_of(job.type, end.to_state.value).observe(elapsed_s)
    if end.failure_class is not None:
        failures.labels(failure_class=end.failure_class.value, type=job.type).inc()


def decision_closed(decision: Decision) -> None:
    """A decision was answered (by a person, a rule or its timeout default)."""
    source = decision.answer_source.value if decision.answer_source is not None else "unknown"
    decision_wait.labels(source=source).observe(_seconds_since(decision.created_at, decision.answered_at))
