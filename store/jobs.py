"""Writing and reading jobs: enqueue with idempotency keys, look-ups, human transitions, board counts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store import clock
from store.database import Database
from store.errors import JobNotFound
from store.models import Event, Job, NewJob
from store.schema import jobs, pauses
from store.states import OPEN_STATES, JobState
from store.trail import event_row, insert_events, insert_notifications, read_events
from store.transitions import row_to_job, standard_notifications, transition

#: The channel other replicas LISTEN on to learn of new ready work.
NOTIFY_CHANNEL = "queuebot_jobs"

#: Rows per multi-row INSERT of keyed jobs, well inside both databases' limit on bound parameters.
KEYED_INSERT_CHUNK = 500

#: States in which a job waits for a person or a clock rather than for a worker.
WAITING_STATES = frozenset(
    {
        JobState.PENDING,
        JobState.READY,
        JobState.WAITING_DECISION,
        JobState.NEEDS_REVIEW,
        JobState.RETRY_SCHEDULED,
        JobState.BLOCKED,
        JobState.ESCALATED,
        JobState.PAUSED,
    }
)


class Enqueued(BaseModel):
    model_config = ConfigDict(frozen=True)

    job: Job
    created: bool  # False when the idempotency key matched an existing job


class BoardStats(BaseModel):
    """Counts for `queuebot status` and the Home tab."""

    model_config = ConfigDict(frozen=True)

    states: dict[str, int]
    lanes: dict[str, dict[str, int]]
    oldest_waiting_s: dict[str, float]
    sla_breaches: int


def _row_for(new: NewJob, at: datetime) -> dict[str, Any]:
    return {
        "type": new.type,
        "lane": new.lane,
        "priority": new.priority.rank,
        "input": new.input,
        "owner": new.owner,
        "channel": new.channel,
        "idempotency_key": new.idempotency_key,
        "state": new.state.value,
        "attempts": 0,
        "max_attempts": new.max_attempts,
        "run_seq": 0,
        "run_after": new.run_after or at,
        "created_at": at,
        "updated_at": at,
        "deadline_at": new.deadline_at,
        "sla_at": new.sla_at,
        "sla_level": 0,
        "sla_next_at": new.sla_at,
        "spend_usd": 0.0,
        "budget_usd": new.budget_usd,
        "parent_id": new.parent_id,
        "reason": new.reason,
    }


async def insert_jobs(
    conn: AsyncConnection, new_jobs: Sequence[NewJob], *, at: datetime, actor: str
) -> list[Enqueued]:
    """Write jobs in the caller's transaction. A job whose idempotency key exists is not written again:
    the existing job comes back with created=False (also when another transaction wins the race)."""
    new_jobs = await _hold_paused(conn, new_jobs)
    first_of_key: dict[str, NewJob] = {}
    plain: list[NewJob] = []
    for new in new_jobs:
        if new.idempotency_key is None:
            plain.append(new)
        else:
            first_of_key.setdefault(new.idempotency_key, new)
    created_plain = await _insert_plain(conn, plain, at)
    created_keyed = await _insert_keyed(conn, list(first_of_key.values()), at)
    existing: dict[str, Job] = {}
    missing = [key for key in first_of_key if key not in created_keyed]
    if missing:
        found = await conn.execute(sa.select(jobs).where(jobs.c.idempotency_key.in_(missing)))
        existing = {str(job.idempotency_key): job for job in map(row_to_job, found)}
    fresh = iter(created_plain)
    result_list: list[Enqueued] = []
    for new in new_jobs:
        key = new.idempotency_key
        if key is None:
            result_list.append(Enqueued(job=next(fresh), created=True))
        elif key in created_keyed:
            job = created_keyed[key]
            result_list.append(Enqueued(job=job, created=new is first_of_key[key]))
        else:
            result_list.append(Enqueued(job=existing[key], created=False))
    created = [*created_plain, *created_keyed.values()]
    await insert_events(
        conn,
        [
            event_row(
                job.id,
                at=at,
                actor=actor,
                kind="enqueued",
                to_state=job.state,
                reason=job.reason,
                details={"parent": job.parent_id} if job.parent_id else None,
            )
            for job in created
        ],
    )
    await insert_notifications(
        conn,
        [
            note
            for job in created
            if job.state is JobState.PENDING
            for note in standard_notifications(job, at)
        ],
        at,
    )
    if conn.dialect.name == "postgresql":
        for lane in sorted({job.lane for job in created if job.state is JobState.READY}):
            await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, lane)))
    return result_list


async def _hold_paused(conn: AsyncConnection, new_jobs: Sequence[NewJob]) -> list[NewJob]:
    """Jobs enqueued into a paused scope (all, their lane or their type) start paused; read in the same
    transaction as the insert, so a pause cannot slip in between."""
    held = {(row.scope, row.name) for row in await conn.execute(sa.select(pauses.c.scope, pauses.c.name))}
    if not held:
        return list(new_jobs)
    return [
        new.model_copy(update={"state": JobState.PAUSED, "reason": "paused at enqueue"})
        if new.state is JobState.READY and {("all", ""), ("lane", new.lane), ("type", new.type)} & held
        else new
        for new in new_jobs
    ]


async def _insert_plain(conn: AsyncConnection, new_jobs: Sequence[NewJob], at: datetime) -> list[Job]:
    """Insert jobs without keys; returns them in input order."""
    if not new_jobs:
        return []
    rows = [_row_for(new, at) for new in new_jobs]
    if conn.dialect.name == "sqlite":
        # SQLAlchemy cannot batch INSERT .. RETURNING in parameter order on SQLite and falls back to one
        # statement per row. The writer holds the database lock and ids only grow (AUTOINCREMENT), so a
        # batched insert whose rows come back sorted by id is in parameter order.
        result = await conn.execute(jobs.insert().returning(*jobs.c), rows)
        return sorted((row_to_job(row) for row in result), key=lambda job: job.id)
    result = await conn.execute(jobs.insert().returning(*jobs.c, sort_by_parameter_order=True), rows)
    return [row_to_job(row) for row in result]


async def _insert_keyed(conn: AsyncConnection, new_jobs: Sequence[NewJob], at: datetime) -> dict[str, Job]:
    """Insert jobs with distinct idempotency keys, skipping keys that exist; returns the inserted by key."""
    if not new_jobs:
        return {}
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    inserted: dict[str, Job] = {}
    for start in range(0, len(new_jobs), KEYED_INSERT_CHUNK):
        statement = (
            insert(jobs)
            .values([_row_for(new, at) for new in new_jobs[start : start + KEYED_INSERT_CHUNK]])
            .on_conflict_do_nothing(
                index_elements=[jobs.c.idempotency_key], index_where=jobs.c.idempotency_key.is_not(None)
            )
            .returning(*jobs.c)
        )
        inserted.update(
            {str(job.idempotency_key): job for job in map(row_to_job, await conn.execute(statement))}
        )
    return inserted


class JobsRepo:
    """Jobs as people and the engine see them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(self, new_jobs: Sequence[NewJob], *, actor: str) -> list[Enqueued]:
        async with self.db.write() as conn:
            return await insert_jobs(conn, new_jobs, at=clock.now(), actor=actor)

    async def get(self, job_id: int) -> Job:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        if row is None:
            raise JobNotFound(job_id)
        return row_to_job(row)

    async def events(self, job_id: int) -> list[Event]:
        async with self.db.read() as conn:
            return await read_events(conn, job_id)

    async def list(
        self,
        *,
        states: Sequence[JobState] | None = None,
        lane: str | None = None,
        owner: str | None = None,
        type: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs newest first, filtered."""
        query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if states is not None:
            query = query.where(jobs.c.state.in_([s.value for s in states]))
        if lane is not None:
            query = query.where(jobs.c.lane == lane)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if type is not None:
            query = query.where(jobs.c.type == type)
        async with self.db.read() as conn:
            return [row_to_job(row) for row in await conn.execute(query)]

    async def move(
        self,
        job_id: int,
        to: JobState,
        *,
        actor: str,
        reason: str | None = None,
        from_states: Sequence[JobState] | None = None,
        values: dict[str, Any] | None = None,
        kind: str | None = None,
    ) -> Job:
        """A person's or a rule's transition (cancel, retry, pause, resume…)."""
        async with self.db.write() as conn:
            job, _ = await transition(
                conn,
                job_id,
                to,
                at=clock.now(),
                actor=actor,
                reason=reason,
                from_states=from_states,
                values=values,
                kind=kind,
            )
            return job

    async def add_event(
        self,
        job_id: int,
        *,
        actor: str,
        kind: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append to a job's trail without changing its state (evidence, audits, denials)."""
        async with self.db.write() as conn:
            await insert_events(
                conn,
                [event_row(job_id, at=clock.now(), actor=actor, kind=kind, reason=reason, details=details)],
            )

    async def acknowledge(self, job_id: int, *, actor: str) -> Job:
        """Stop a job's escalation ladder; recorded in its trail."""
        at = clock.now()
        async with self.db.write() as conn:
            result = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.acknowledged_at.is_(None))
                .values(acknowledged_at=at, acknowledged_by=actor, updated_at=at, sla_next_at=None)
                .returning(*jobs.c)
            )
            row = result.first()
            if row is None:
                return await self._get_in(conn, job_id)
            await insert_events(conn, [event_row(job_id, at=at, actor=actor, kind="acknowledged")])
            return row_to_job(row)

    async def _get_in(self, conn: AsyncConnection, job_id: int) -> Job:
        row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        if row is None:
            raise JobNotFound(job_id)
        return row_to_job(row)

    async def stats(self) -> BoardStats:
        """Counts by state and lane, oldest waiting age per state, and SLA breaches."""
        now = clock.now()
        open_values = [s.value for s in OPEN_STATES]
        async with self.db.read() as conn:
            by_state_lane = await conn.execute(
                sa.select(jobs.c.state, jobs.c.lane, sa.func.count()).group_by(jobs.c.state, jobs.c.lane)
            )
            oldest = await conn.execute(
                sa.select(jobs.c.state, sa.func.min(jobs.c.updated_at))
                .where(jobs.c.state.in_([s.value for s in WAITING_STATES]))
                .group_by(jobs.c.state)
            )
            breaches = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(jobs)
                .where(jobs.c.state.in_(open_values), jobs.c.sla_at.is_not(None), jobs.c.sla_at < now)
            )
            states: dict[str, int] = {s.value: 0 for s in JobState}
            lanes: dict[str, dict[str, int]] = {}
            for state, lane, count in by_state_lane:
                states[state] += count
                lanes.setdefault(lane, {})[state] = count
            oldest_s = {state: max(0.0, (now - since).total_seconds()) for state, since in oldest if since}
        return BoardStats(states=states, lanes=lanes, oldest_waiting_s=oldest_s, sla_breaches=breaches or 0)
