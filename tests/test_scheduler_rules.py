"""The time rules under a frozen clock: escalation ladders, deadlines, cron, the idle hook and pruning —
and each rule acting once per item when two schedulers run it at the same moment."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Registry, job_type
from bot.settings import Config, IdleConfig, LadderConfig, LadderLevel, SchedulerConfig
from scheduler import rules
from scheduler.service import Scheduler
from store import Store
from store.states import JobState
from tests.conftest import fast_config
from tests.helpers import drain


class Empty(BaseModel):
    pass


@pytest.fixture
def config() -> Config:
    return fast_config(
        admins=["UADMIN"],
        backup="UBACKUP",
        default_channel="CQUEUE",
        ladders={
            "default": LadderConfig(
                levels=[
                    LadderLevel(after=0, notify=["owner"]),
                    LadderLevel(after=600, notify=["backup", "admins"]),
                    LadderLevel(after=1200, notify=["channel"]),
                ],
                repeat_every=3600,
            )
        },
        idle=IdleConfig(job_type="test.planner", after=300),
        scheduler=SchedulerConfig(tick_s=0.1, retention=86400),
    )


@pytest.fixture(autouse=True)
def test_types(types: Registry) -> None:
    @job_type("test.slow", input=Empty, lane="fast", sla="10m", deadline="2h", into=types)
    async def slow(ctx: JobContext, data: Empty) -> None:
        await ctx.ask("go", "Go?", ["yes"])

    @job_type("test.planner", input=Empty, lane="fast", into=types)
    async def planner(ctx: JobContext, data: Empty) -> str:
        return "planned"

    @job_type("test.hourly", input=Empty, lane="fast", cron="0 * * * *", into=types)
    async def hourly(ctx: JobContext, data: Empty) -> str:
        return "tick"


async def sla_notes(engine: Engine) -> list[tuple[int, str]]:
    return [(n.payload["level"], n.target or "") for n in await engine.store.outbox.all(kind="sla.level")]


async def test_an_overdue_job_climbs_its_ladder_once_per_level(engine: Engine, frozen_clock: Any) -> None:
    job_id = (await engine.enqueue("test.slow", {}, owner="UOWNER")).job.id
    await drain(engine, rules=False)
    frozen_clock.tick(599)
    assert await rules.climb_escalation_ladders(engine) == 0  # the SLA is 10 minutes
    frozen_clock.tick(1)
    assert await rules.climb_escalation_ladders(engine) == 1
    assert await rules.climb_escalation_ladders(engine) == 0  # once per level
    assert await sla_notes(engine) == [(1, "UOWNER")]
    frozen_clock.tick(600)
    await rules.climb_escalation_ladders(engine)
    frozen_clock.tick(600)
    await rules.climb_escalation_ladders(engine)
    assert await sla_notes(engine) == [(1, "UOWNER"), (2, "UBACKUP"), (2, "UADMIN"), (3, "CQUEUE")]
    frozen_clock.tick(3600)
    await rules.climb_escalation_ladders(engine)  # repeats to the last level
    assert (await sla_notes(engine))[-1] == (4, "CQUEUE")
    assert (await engine.store.jobs.stats()).sla_breaches == 1
    trail = [e for e in await engine.store.jobs.events(job_id) if e.kind == "sla_escalated"]
    assert [e.details["level"] for e in trail if e.details] == [1, 2, 3, 4]


async def test_levels_passed_over_at_once_are_all_told(engine: Engine, frozen_clock: Any) -> None:
    job_id = (await engine.enqueue("test.slow", {}, owner="UOWNER")).job.id
    await drain(engine, rules=False)
    frozen_clock.tick(600 + 1300)  # the scheduler was away: levels 1, 2 and 3 are all due at once
    assert await rules.climb_escalation_ladders(engine) == 4
    assert await sla_notes(engine) == [(1, "UOWNER"), (2, "UBACKUP"), (2, "UADMIN"), (3, "CQUEUE")]
    frozen_clock.tick(3 * 3600)  # three repeats of the top level due: the channel hears once more
    assert await rules.climb_escalation_ladders(engine) == 1
    assert (await sla_notes(engine))[-1] == (6, "CQUEUE")
    [first, repeat] = [e for e in await engine.store.jobs.events(job_id) if e.kind == "sla_escalated"]
    assert first.details is not None and first.details["level"] == 3
    assert first.details["notify"] == ["UOWNER", "UBACKUP", "UADMIN", "CQUEUE"]
    assert repeat.details is not None and repeat.details["notify"] == ["CQUEUE"]


async def test_only_the_owner_admins_and_people_on_the_ladder_may_acknowledge(engine: Engine) -> None:
    from store.errors import NotPermitted

    job_id = (await engine.enqueue("test.slow", {}, owner="UOWNER")).job.id
    with pytest.raises(NotPermitted, match="UGUEST may not acknowledge Q-1"):
        await engine.acknowledge(job_id, actor="UGUEST")
    job = await engine.store.jobs.get(job_id)
    assert job.acknowledged_by is None and job.sla_next_at is not None
    assert [(e.actor, e.reason) for e in await engine.store.jobs.events(job_id) if e.kind == "denied"] == [
        ("UGUEST", "not permitted to acknowledge")
    ]
    assert (await engine.acknowledge(job_id, actor="UBACKUP")).acknowledged_by == "UBACKUP"  # level 2


async def test_a_jobs_owner_may_resume_the_job_they_paused(engine: Engine) -> None:
    from store.errors import NotPermitted

    job_id = (await engine.enqueue("test.slow", {}, owner="UOWNER")).job.id
    await engine.pause(f"Q-{job_id}", actor="UOWNER")
    with pytest.raises(NotPermitted):
        await engine.resume(f"Q-{job_id}", actor="UGUEST")
    with pytest.raises(NotPermitted):
        await engine.resume("all", actor="UOWNER")  # the whole queue stays an admin's call
    assert await engine.resume(f"Q-{job_id}", actor="UOWNER") == 1
    assert (await engine.store.jobs.get(job_id)).state is JobState.READY


async def test_acknowledging_stops_the_ladder(engine: Engine, frozen_clock: Any) -> None:
    job_id = (await engine.enqueue("test.slow", {}, owner="UOWNER")).job.id
    frozen_clock.tick(600)
    await rules.climb_escalation_ladders(engine)
    job = await engine.acknowledge(job_id, actor="UOWNER")
    assert job.acknowledged_by == "UOWNER" and job.sla_next_at is None
    frozen_clock.tick(7200)
    await rules.climb_escalation_ladders(engine)
    assert await sla_notes(engine) == [(1, "UOWNER")]
    assert "acknowledged" in [e.kind for e in await engine.store.jobs.events(job_id)]


async def test_jobs_past_their_deadline_expire_and_their_owner_is_told(
    engine: Engine, frozen_clock: Any
) -> None:
    job_id = (await engine.enqueue("test.slow", {}, owner="UOWNER")).job.id
    await drain(engine, rules=False)
    frozen_clock.tick(7199)
    assert await rules.expire_past_deadlines(engine) == 0
    frozen_clock.tick(2)
    assert await rules.expire_past_deadlines(engine) == 1
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.reason) == (JobState.EXPIRED, "deadline passed")
    [decision] = await engine.store.decisions.for_job(job_id)
    assert decision.state.value == "cancelled"
    notes = [(n.kind, n.target) for n in await engine.store.outbox.all() if n.kind == "job.attention"]
    assert notes == [("job.attention", "UOWNER")]


def test_cron_fire_times_are_the_ticks_in_the_window() -> None:
    start = datetime(2026, 6, 1, 10, 30, tzinfo=UTC)
    times = rules.cron_fire_times("0 * * * *", start, datetime(2026, 6, 1, 13, 0, tzinfo=UTC))
    assert [t.hour for t in times] == [11, 12, 13]
    assert rules.cron_fire_times("0 * * * *", times[-1], times[-1]) == []


async def test_cron_types_fire_once_per_tick_even_from_two_schedulers(
    store: Store, engine: Engine, frozen_clock: Any
) -> None:
    other_store = Store.connect(store.db.url)
    other = Engine(other_store, engine.config, types=engine.types)
    try:
        first, second = rules.CronRule(engine), rules.CronRule(other)
        frozen_clock.tick(3600)  # 13:00 passes
        fired = await asyncio.gather(first(), second())
        assert sorted(fired) == [0, 1]
        assert await first() == 0
    finally:
        await other_store.close()
    [job] = await engine.store.jobs.list(type="test.hourly")
    assert job.idempotency_key == "cron:test.hourly:2026-06-01T13:00:00+00:00"


async def test_two_schedulers_racing_act_once_per_item(
    store: Store, engine: Engine, frozen_clock: Any
) -> None:
    for _ in range(30):
        await engine.enqueue("test.slow", {}, owner="UOWNER")
    await drain(engine, rules=False)
    other_store = Store.connect(store.db.url)
    other = Engine(other_store, engine.config, types=engine.types)
    try:
        frozen_clock.tick(600)
        await asyncio.gather(Scheduler(engine).run_once(), Scheduler(other).run_once())
        frozen_clock.tick(3600 * 2)
        await asyncio.gather(Scheduler(engine).run_once(), Scheduler(other).run_once())
    finally:
        await other_store.close()
    notes = await sla_notes(engine)
    assert len(notes) == len(set(n.dedup_key for n in await engine.store.outbox.all(kind="sla.level")))
    assert sorted(level for level, _ in notes).count(1) == 30
    events = [e for job_id in range(1, 31) for e in await engine.store.jobs.events(job_id)]
    assert sum(1 for e in events if e.kind == "expired") == 30


async def test_the_idle_hook_enqueues_a_planner_once_per_idle_spell(
    engine: Engine, frozen_clock: Any
) -> None:
    await engine.enqueue("demo.echo", {"text": "work"})
    assert await rules.enqueue_idle_job(engine) is False  # not idle: something is ready
    await drain(engine, rules=False)
    frozen_clock.tick(299)
    assert await rules.enqueue_idle_job(engine) is False
    frozen_clock.tick(2)
    assert await rules.enqueue_idle_job(engine) is True
    assert await rules.enqueue_idle_job(engine) is False  # that planner is ready: not idle
    await drain(engine, rules=False)
    assert [j.state for j in await engine.store.jobs.list(type="test.planner")] == [JobState.COMPLETED]


async def test_pruning_deletes_finished_jobs_past_retention_only(engine: Engine, frozen_clock: Any) -> None:
    done = (await engine.enqueue("demo.echo", {"text": "old"})).job.id
    await drain(engine, rules=False)
    waiting = (await engine.enqueue("test.slow", {})).job.id
    frozen_clock.tick(86400 + 1)
    assert await rules.prune_finished_jobs(engine) == 1
    assert [j.id for j in await engine.store.jobs.list()] == [waiting]
    assert await engine.store.jobs.events(done) == []
