"""Finished jobs are counted, not scanned: the board's counts stay equal to the jobs in the table through
completions, failures, re-queues and pruning, and a recount from the table agrees."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from bot.engine import Engine
from store import Store
from store.counts import finished_by_lane, recount_finished
from store.models import NewJob, RunEnd
from store.schema import jobs
from store.states import TERMINAL_STATES, JobState


def echo(n: int) -> NewJob:
    return NewJob(type="demo.echo", lane="fast", input={"text": str(n)})


async def counted_in_table(store: Store) -> Counter[tuple[str, str]]:
    async with store.db.read() as conn:
        rows = await conn.execute(
            sa.select(jobs.c.lane, jobs.c.state, sa.func.count())
            .where(jobs.c.state.in_([s.value for s in TERMINAL_STATES]))
            .group_by(jobs.c.lane, jobs.c.state)
        )
        return Counter({(lane, state): n for lane, state, n in rows})


async def counted_by_store(store: Store) -> Counter[tuple[str, str]]:
    async with store.db.read() as conn:
        return Counter({key: n for key, n in (await finished_by_lane(conn)).items() if n})


async def test_the_finished_counts_follow_every_way_into_and_out_of_a_terminal_state(
    store: Store, engine: Engine, frozen_clock: Any
) -> None:
    await store.jobs.enqueue([echo(n) for n in range(6)], actor="test")
    claimed = await store.claims.claim("fast", 6, worker="w")
    plain = [
        RunEnd(
            job_id=job.id, run_seq=job.run_seq, to_state=JobState.COMPLETED, actor="w", event_kind="completed"
        )
        for job in claimed[:4]
    ]
    dead = [
        RunEnd(job_id=job.id, run_seq=job.run_seq, to_state=JobState.DEAD, actor="w", event_kind="fatal")
        for job in claimed[4:]
    ]
    assert await store.claims.finish([*plain, *dead]) == {job.id for job in claimed}
    assert await counted_by_store(store) == await counted_in_table(store)
    assert (await store.jobs.stats()).states["completed"] == 4

    await engine.retry(claimed[4].id, actor="UADMIN0001")  # dead -> ready: no longer counted as dead
    assert await counted_by_store(store) == await counted_in_table(store)
    assert (await store.jobs.stats()).states["dead"] == 1

    frozen_clock.tick(timedelta(days=2))
    assert await store.scans.prune_finished(older_than_s=86400) == 5  # the re-queued job is open again
    assert await counted_by_store(store) == await counted_in_table(store)
    assert (await store.jobs.stats()).states["completed"] == 0


async def test_a_recount_rebuilds_the_counts_from_the_table(store: Store) -> None:
    await store.jobs.enqueue([echo(n) for n in range(3)], actor="test")
    claimed = await store.claims.claim("fast", 3, worker="w")
    ends = [
        RunEnd(
            job_id=job.id, run_seq=job.run_seq, to_state=JobState.COMPLETED, actor="w", event_kind="completed"
        )
        for job in claimed
    ]
    await store.claims.finish(ends)
    async with store.db.write() as conn:  # rows written behind the store's back, as a bulk load would
        await conn.execute(jobs.update().where(jobs.c.id == claimed[0].id).values(state="cancelled"))
        await recount_finished(conn)
    assert await counted_by_store(store) == await counted_in_table(store)
    assert (await store.jobs.stats()).states == {
        **{s.value: 0 for s in JobState},
        "completed": 2,
        "cancelled": 1,
    }
