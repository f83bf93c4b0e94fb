"""Claims: most urgent first, never twice, and not while paused or cooling down."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from pydantic import BaseModel

from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Registry, job_type
from bot.runtime import Worker
from bot.wakeup import Wakeup
from store import Store, clock
from store.models import NewJob
from store.states import JobState, Priority
from tests.helpers import drain


def echo(n: int, **fields: object) -> NewJob:
    return NewJob.model_validate({"type": "demo.echo", "lane": "fast", "input": {"text": str(n)}, **fields})


async def test_claims_take_p0_first_then_oldest(store: Store) -> None:
    await store.jobs.enqueue(
        [
            echo(1, priority=Priority.P2),
            echo(2, priority=Priority.P1),
            echo(3, priority=Priority.P0),
            echo(4, priority=Priority.P1),
        ],
        actor="test",
    )
    claimed = await store.claims.claim("fast", 3, worker="w")
    assert [job.input["text"] for job in claimed] == ["3", "2", "4"]
    assert all(
        job.state is JobState.RUNNING and job.claimed_by == "w" and job.run_seq == 1 for job in claimed
    )


async def test_claims_skip_future_jobs_and_other_lanes(store: Store) -> None:
    later = clock.now() + timedelta(minutes=5)
    await store.jobs.enqueue([echo(1, run_after=later), echo(2, lane="normal"), echo(3)], actor="test")
    claimed = await store.claims.claim("fast", 10, worker="w")
    assert [job.input["text"] for job in claimed] == ["3"]


async def test_concurrent_claimers_never_take_the_same_job(store: Store) -> None:
    total = 300
    await store.jobs.enqueue([echo(n) for n in range(total)], actor="test")
    # Each claimer has its own engine and connections, as separate processes would.
    claimers = [Store.connect(store.db.url) for _ in range(6)]
    first_round = asyncio.Barrier(len(claimers))

    async def claim_all(claimer: Store, name: str) -> list[int]:
        taken = [job.id for job in await claimer.claims.claim("fast", 7, worker=name)]
        await first_round.wait()  # everyone has claimed at the same moment at least once
        while batch := await claimer.claims.claim("fast", 7, worker=name):
            taken += [job.id for job in batch]
        return taken

    try:
        results = await asyncio.gather(*(claim_all(c, f"w{i}") for i, c in enumerate(claimers)))
    finally:
        await asyncio.gather(*(c.close() for c in claimers))
    taken = [job_id for result in results for job_id in result]
    assert len(taken) == total
    assert len(set(taken)) == total
    assert all(results)  # every claimer got work


async def test_several_workers_run_every_job_exactly_once(store: Store, engine: Engine) -> None:
    await engine.enqueue_many([engine.new_job("demo.echo", {"text": str(n)}) for n in range(120)], actor="t")
    others = [Store.connect(store.db.url) for _ in range(2)]
    engines = [engine] + [Engine(s, engine.config, types=engine.types, wakeup=Wakeup()) for s in others]
    try:
        await asyncio.gather(*(Worker(e).run(until_idle=True) for e in engines))
    finally:
        await asyncio.gather(*(s.close() for s in others))
    stats = await store.jobs.stats()
    assert stats.states["completed"] == 120
    claims = Counter()
    for job_id in range(1, 121):
        claims[job_id] = sum(1 for e in await store.jobs.events(job_id) if e.kind == "claimed")
    assert set(claims.values()) == {1}


async def test_pause_all_stops_claims_and_resume_restores_them(store: Store, engine: Engine) -> None:
    await engine.pause("all", actor="cli")
    job = (await engine.enqueue("demo.echo", {"text": "held"})).job
    assert job.state is JobState.PAUSED
    assert await store.claims.claim("fast", 5, worker="w") == []
    assert await engine.resume("all", actor="cli") == 1
    await drain(engine)
    assert (await store.jobs.get(job.id)).state is JobState.COMPLETED


async def test_pausing_a_lane_moves_its_ready_jobs_and_leaves_other_lanes(
    store: Store, engine: Engine
) -> None:
    fast = (await engine.enqueue("demo.echo", {"text": "a"})).job
    normal = (await engine.enqueue("demo.flaky", {"fail_times": 0})).job
    assert await engine.pause("fast", actor="cli") == 1
    assert (await store.jobs.get(fast.id)).state is JobState.PAUSED
    await drain(engine)
    assert (await store.jobs.get(normal.id)).state is JobState.COMPLETED
    assert (await store.jobs.get(fast.id)).state is JobState.PAUSED
    # A type pause still holds the job after its lane resumes.
    await engine.pause("demo.echo", actor="cli")
    assert await engine.resume("fast", actor="cli") == 0
    assert await engine.resume("demo.echo", actor="cli") == 1
    assert (await store.jobs.get(fast.id)).state is JobState.READY


async def test_a_cooling_lane_is_not_claimed_until_its_cooldown_ends(store: Store) -> None:
    from store.claims import _set_cooldown

    await store.jobs.enqueue([echo(1)], actor="test")
    async with store.db.write() as conn:
        await _set_cooldown(conn, "fast", clock.now() + timedelta(seconds=60))
    assert await store.claims.claim("fast", 5, worker="w") == []
    assert "fast" in await store.controls.cooldowns()
    async with store.db.write() as conn:
        await _set_cooldown(conn, "fast", clock.now() - timedelta(seconds=1))  # never shortens a cooldown
    assert await store.claims.claim("fast", 5, worker="w") == []


async def test_each_lane_runs_at_most_its_slots_and_a_full_lane_never_starves_another(
    engine: Engine, types: Registry
) -> None:
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()

    class Work(BaseModel):
        lane: str

    async def body(ctx: JobContext, data: Work) -> None:
        running[data.lane] += 1
        most[data.lane] = max(most[data.lane], running[data.lane])
        await asyncio.sleep(0.05)
        running[data.lane] -= 1

    job_type("test.heavy", input=Work, lane="heavy", into=types)(body)
    job_type("test.fast", input=Work, lane="fast", into=types)(body)
    heavy = [engine.new_job("test.heavy", {"lane": "heavy"}) for _ in range(6)]
    fast = [engine.new_job("test.fast", {"lane": "fast"}) for _ in range(24)]
    await engine.enqueue_many(heavy + fast, actor="t")
    await drain(engine)
    assert most["heavy"] == engine.config.lanes["heavy"] == 2
    assert most["fast"] == engine.config.lanes["fast"] == 8
    assert (await engine.store.jobs.stats()).states["completed"] == 30
