"""Prometheus metrics at GET /metrics: the board's numbers, read from the store at scrape time, followed by
the process's own instruments (claim latency, run time, failures by class, decision wait)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from bot import instruments
from bot.engine import Engine


class Metrics:
    """One registry per app, so tests and several apps in a process do not share gauges."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self.jobs = Gauge(
            "queuebot_jobs", "Jobs by state and lane", ["state", "lane"], registry=self.registry
        )
        self.oldest = Gauge(
            "queuebot_oldest_waiting_seconds",
            "Age of the oldest job waiting in each state",
            ["state"],
            registry=self.registry,
        )
        self.breaches = Gauge("queuebot_sla_breaches", "Open jobs past their SLA", registry=self.registry)
        self.spend = Gauge(
            "queuebot_spend_today_usd", "Spend today by job type", ["type"], registry=self.registry
        )
        self.paused = Gauge(
            "queuebot_paused",
            "Pauses in force by scope (all, lane, type, job)",
            ["scope"],
            registry=self.registry,
        )

    async def refresh(self) -> None:
        status = await self.engine.status()
        self.jobs.clear()
        for lane, counts in status.stats.lanes.items():
            for state, count in counts.items():
                self.jobs.labels(state=state, lane=lane).set(count)
        self.oldest.clear()
        for state, age in status.stats.oldest_waiting_s.items():
            self.oldest.labels(state=state).set(age)
        self.breaches.set(status.stats.sla_breaches)
        self.spend.clear()
        for job_type, usd in status.spend_today.items():
            self.spend.labels(type=job_type).set(usd)
        self.paused.clear()
        for pause in status.pauses:
            self.paused.labels(scope=pause.scope).inc()

    async def handle(self, _request: web.Request) -> web.Response:
        await self.refresh()
        body = generate_latest(self.registry) + generate_latest(instruments.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
