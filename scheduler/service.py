"""Runs the time rules on APScheduler's asyncio scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.engine import Engine
from scheduler import rules

log = logging.getLogger("queuebot.scheduler")

Rule = Callable[[], Awaitable[Any]]


class Scheduler:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cron = rules.CronRule(engine)
        self.tick_rules: dict[str, Rule] = {
            "reap_orphaned_jobs": lambda: rules.reap_orphaned_jobs(engine),
            "time_out_decisions": lambda: rules.time_out_decisions(engine),
            "climb_escalation_ladders": lambda: rules.climb_escalation_ladders(engine),
            "expire_past_deadlines": lambda: rules.expire_past_deadlines(engine),
            "promote_due_retries": lambda: rules.promote_due_retries(engine),
            "fire_cron_job_types": self.cron,
            "enqueue_idle_job": lambda: rules.enqueue_idle_job(engine),
        }
        self.slow_rules: dict[str, Rule] = {"prune_finished_jobs": lambda: rules.prune_finished_jobs(engine)}
        self._scheduler: AsyncIOScheduler | None = None
        self._inflight: set[asyncio.Task[Any]] = set()

    async def run_once(self) -> dict[str, Any]:
        """Run every rule once, in order (for tests and `work --until-idle`)."""
        return {
            name: await self._guarded(name, rule)
            for name, rule in {**self.tick_rules, **self.slow_rules}.items()
        }

    async def _guarded(self, name: str, rule: Rule) -> Any:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await rule()
        except Exception as exc:  # one failing rule must not stop the others; it runs again next tick
            log.warning("event=rule_failed rule=%s error=%s", name, exc)
            return None
        finally:
            if task is not None:
                self._inflight.discard(task)

    def start(self) -> None:
        config = self.engine.config.scheduler
        scheduler = AsyncIOScheduler(timezone="UTC")
        for name, rule in self.tick_rules.items():
            scheduler.add_job(
                self._guarded,
                IntervalTrigger(seconds=config.tick_s),
                args=[name, rule],
                id=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        for name, rule in self.slow_rules.items():
            scheduler.add_job(
                self._guarded,
                IntervalTrigger(seconds=config.prune_every_s),
                args=[name, rule],
                id=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        scheduler.start()
        self._scheduler = scheduler

    async def stop(self) -> None:
        """Stop firing rules and let the ones in flight finish their transactions (cancelling them midway
        would leave them unwinding while the database closes)."""
        if self._scheduler is None:
            return
        scheduler, self._scheduler = self._scheduler, None
        scheduler.pause()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        scheduler.shutdown(wait=False)
