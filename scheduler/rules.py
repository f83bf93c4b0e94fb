"""The time rules. Each is one scan through the store's conditional updates, so it is safe to run on
several replicas at once; correctness lives in the database, not in the scheduler."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from bot import instruments
from bot.engine import Engine
from bot.ladders import ladder_for
from store import clock
from store.states import JobState

log = logging.getLogger("queuebot.scheduler")


async def reap_orphaned_jobs(engine: Engine) -> int:
    """Running jobs with a stale heartbeat go back to ready (or dead when out of attempts)."""
    reaped = await engine.store.scans.reap_orphans(
        heartbeat_timeout_s=engine.config.worker.heartbeat_timeout_s
    )
    for job in reaped:
        log.warning("event=orphan_reaped job=%s state=%s", job.ref, job.state)
        engine.wakeup.notify(job.lane)
    return len(reaped)


async def time_out_decisions(engine: Engine) -> int:
    """Decisions past their timeout: the default is recorded, or the job is escalated."""
    outcomes = await engine.store.decisions.expire_due()
    for outcome in outcomes:
        log.info("event=decision_timed_out decision=%s job=%s", outcome.decision.ref, outcome.job.ref)
        if outcome.decision.answered_at is not None:
            instruments.decision_closed(outcome.decision)
        if outcome.job.state is JobState.READY:
            engine.wakeup.notify(outcome.job.lane)
    return len(outcomes)


async def climb_escalation_ladders(engine: Engine) -> int:
    """Overdue jobs notify the next level of their ladder (written to the outbox for Slack to DM)."""
    return await engine.store.scans.escalate_overdue(lambda job: ladder_for(engine.config, job))


async def expire_past_deadlines(engine: Engine) -> int:
    expired = await engine.store.scans.expire_past_deadline()
    for job in expired:
        log.info("event=job_expired job=%s", job.ref)
    return len(expired)


async def promote_due_retries(engine: Engine) -> int:
    promoted = await engine.store.scans.promote_due_retries()
    if promoted:
        engine.wakeup.notify_all()
    return promoted


def cron_fire_times(expression: str, after: datetime, until: datetime) -> list[datetime]:
    """Fire times of a crontab expression in (after, until], in UTC."""
    trigger = CronTrigger.from_crontab(expression, timezone="UTC")
    times: list[datetime] = []
    fire = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    while fire is not None and fire <= until:
        times.append(fire)
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return times


class CronRule:
    """Enqueues cron job types, keyed by their fire time so no tick runs twice on any replica."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.checked_until = clock.now()

    async def __call__(self) -> int:
        now = clock.now()
        fired = 0
        for job_type in self.engine.types:
            if not job_type.cron:
                continue
            for fire in cron_fire_times(job_type.cron, self.checked_until, now):
                enqueued = await self.engine.enqueue(
                    job_type.name, {}, actor="scheduler", key=f"cron:{job_type.name}:{fire.isoformat()}"
                )
                fired += int(enqueued.created)
        self.checked_until = now
        return fired


async def enqueue_idle_job(engine: Engine) -> bool:
    """When the queue has been idle long enough, enqueue the configured planner job (once per idle spell)."""
    idle = engine.config.idle
    if idle is None:
        return False
    last = await engine.store.scans.last_activity()
    if last is None or (clock.now() - last).total_seconds() < idle.after:
        return False
    enqueued = await engine.enqueue(
        idle.job_type, idle.input, actor="scheduler", key=f"idle:{idle.job_type}:{last.isoformat()}"
    )
    return enqueued.created


async def prune_finished_jobs(engine: Engine) -> int:
    return await engine.store.scans.prune_finished(older_than_s=engine.config.scheduler.retention)
