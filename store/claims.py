"""A worker's side of the store: batched claims, batched heartbeats, and the batched end of runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store import clock
from store.database import Database, picked_ids
from store.decisions import open_decision
from store.errors import InvalidTransition
from store.jobs import insert_jobs
from store.models import Job, RunEnd
from store.schema import jobs, lane_cooldowns, pauses
from store.states import JobState
from store.trail import event_row, insert_events
from store.transitions import row_to_job, transition


class ClaimsRepo:
    """Claims and run endings; every write names the run (`run_seq`) it belongs to."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, lane: str, limit: int, *, worker: str) -> list[Job]:
        """Take up to `limit` ready jobs of a lane, most urgent first, unless the lane, the whole queue or
        the job's type is paused or the lane is cooling down."""
        if limit <= 0:
            return []
        now = clock.now()
        paused = sa.exists().where(
            sa.or_(
                pauses.c.scope == "all",
                sa.and_(pauses.c.scope == "lane", pauses.c.name == lane),
                sa.and_(pauses.c.scope == "type", pauses.c.name == jobs.c.type),
            )
        )
        cooling = sa.exists().where(lane_cooldowns.c.lane == lane, lane_cooldowns.c.until > now)
        pick = (
            sa.select(jobs.c.id)
            .where(
                jobs.c.state == JobState.READY.value,
                jobs.c.lane == lane,
                jobs.c.run_after <= now,
                ~paused,
                ~cooling,
            )
            .order_by(jobs.c.priority, jobs.c.run_after, jobs.c.id)
            .limit(limit)
        )
        claim = (
            jobs.update()
            .where(picked_ids(pick, self.db.dialect), jobs.c.state == JobState.READY.value)
            .values(
                state=JobState.RUNNING.value,
                run_seq=jobs.c.run_seq + 1,
                claimed_by=worker,
                started_at=now,
                heartbeat_at=now,
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        async with self.db.write() as conn:
            claimed = [row_to_job(row) for row in await conn.execute(claim)]
            await insert_events(
                conn,
                [
                    event_row(
                        job.id,
                        at=now,
                        actor=worker,
                        kind="claimed",
                        from_state=JobState.READY,
                        to_state=JobState.RUNNING,
                        details={"run": job.run_seq},
                    )
                    for job in claimed
                ],
            )
        claimed.sort(key=lambda job: (job.priority.rank, job.run_after, job.id))
        return claimed

    async def heartbeat(self, runs: Sequence[tuple[int, int]], *, worker: str) -> set[int]:
        """Refresh the heartbeat of this worker's runs; returns the job ids it still holds. A job missing from
        the answer was cancelled, paused, expired or reaped: its run must stop."""
        if not runs:
            return set()
        now = clock.now()
        async with self.db.write() as conn:
            result = await conn.execute(
                jobs.update()
                .where(
                    sa.tuple_(jobs.c.id, jobs.c.run_seq).in_(list(runs)),
                    jobs.c.state == JobState.RUNNING.value,
                    jobs.c.claimed_by == worker,
                )
                .values(heartbeat_at=now)
                .returning(jobs.c.id)
            )
            return {row.id for row in result}

    async def finish(self, ends: Sequence[RunEnd]) -> set[int]:
        """Write the ends of many runs in one transaction. Returns the job ids whose end was recorded; a run
        that no longer holds its job (cancelled, reaped, paused meanwhile) changes nothing."""
        if not ends:
            return set()
        now = clock.now()
        plain = [end for end in ends if end.is_plain_completion]
        other = [end for end in ends if not end.is_plain_completion]
        async with self.db.write() as conn:
            done = await _complete_plain(conn, plain, now)
            for end in other:
                if await _finish_one(conn, end, now):
                    done.add(end.job_id)
        return done


async def _complete_plain(conn: AsyncConnection, ends: Sequence[RunEnd], now: datetime) -> set[int]:
    """Completions with nothing but a result: one UPDATE for the batch, results and events in bulk."""
    if not ends:
        return set()
    confirmed = await conn.execute(
        jobs.update()
        .where(
            sa.tuple_(jobs.c.id, jobs.c.run_seq).in_([(end.job_id, end.run_seq) for end in ends]),
            jobs.c.state == JobState.RUNNING.value,
        )
        .values(
            state=JobState.COMPLETED.value, finished_at=now, updated_at=now, reason=None, failure_class=None
        )
        .returning(jobs.c.id)
    )
    done = {row.id for row in confirmed}
    with_result = [
        {"job_id": end.job_id, "result_value": end.result}
        for end in ends
        if end.job_id in done and end.result is not None
    ]
    if with_result:
        await conn.execute(
            jobs.update()
            .where(jobs.c.id == sa.bindparam("job_id"))
            .values(result=sa.bindparam("result_value")),
            with_result,
        )
    await insert_events(
        conn,
        [
            event_row(
                end.job_id,
                at=now,
                actor=end.actor,
                kind=end.event_kind,
                from_state=JobState.RUNNING,
                to_state=JobState.COMPLETED,
                details=end.details,
            )
            for end in ends
            if end.job_id in done
        ],
    )
    return done


async def _finish_one(conn: AsyncConnection, end: RunEnd, now: datetime) -> bool:
    values: dict[str, Any] = {"failure_class": end.failure_class.value if end.failure_class else None}
    if end.to_state is not JobState.PENDING or end.reason is not None:
        values["reason"] = end.reason
    if end.result is not None:
        values["result"] = end.result
    if end.run_after is not None:
        values["run_after"] = end.run_after
    if end.spend_attempt:
        values["attempts"] = jobs.c.attempts + 1
    try:
        job, _ = await transition(
            conn,
            end.job_id,
            end.to_state,
            at=now,
            actor=end.actor,
            kind=end.event_kind,
            reason=end.reason,
            details=end.details,
            from_states=[JobState.RUNNING],
            run_seq=end.run_seq,
            values=values,
            notifications=end.notifications,
        )
    except InvalidTransition:
        return False
    if end.decision is not None:
        await open_decision(conn, job, end.decision, at=now, channel=end.decision_channel)
    if end.children:
        await insert_jobs(conn, end.children, at=now, actor=f"job:{job.id}")
    if end.lane_cooldown_until is not None and end.lane:
        await _set_cooldown(conn, end.lane, end.lane_cooldown_until)
    return True


async def _set_cooldown(conn: AsyncConnection, lane: str, until: datetime) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(lane_cooldowns).values(lane=lane, until=until)
    statement = statement.on_conflict_do_update(
        index_elements=["lane"],
        set_={"until": sa.func.max(lane_cooldowns.c.until, statement.excluded.until)}
        if conn.dialect.name == "sqlite"
        else {"until": sa.func.greatest(lane_cooldowns.c.until, statement.excluded.until)},
    )
    await conn.execute(statement)
