"""The one way a job changes state: a conditional UPDATE checked against the transition table, with its
event, its notifications and the closing of its open decisions in the same transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from store.counts import CountKey, add_finished, key_for
from store.errors import InvalidTransition, JobNotFound
from store.models import Job, Notification
from store.schema import decisions, jobs
from store.states import TERMINAL_STATES, DecisionState, JobState, sources_of
from store.trail import event_row, insert_events, insert_notifications

#: States in which a person is told the job needs them (its owner gets a note).
ATTENTION_STATES = frozenset(
    {JobState.PENDING, JobState.BLOCKED, JobState.ESCALATED, JobState.DEAD, JobState.EXPIRED}
)


def row_as_dict(row: sa.Row[Any]) -> dict[str, Any]:
    """A row's columns by name (several times faster than `dict(row._mapping)`)."""
    return dict(zip(row._fields, row, strict=True))


def row_to_job(row: sa.Row[Any]) -> Job:
    return Job.model_validate(row_as_dict(row))


def rows_to_jobs(result: sa.Result[Any]) -> list[Job]:
    """Every row of a result as a Job, the column names read once."""
    names = tuple(result.keys())
    return [Job.model_validate(dict(zip(names, row, strict=True))) for row in result]


class LockedJob(NamedTuple):
    state: JobState
    run_seq: int
    lane: str
    finished_at: datetime | None


async def lock_job_state(conn: AsyncConnection, job_id: int) -> LockedJob:
    """Read where a job stands, locking its row on PostgreSQL until the transaction ends."""
    query = sa.select(jobs.c.state, jobs.c.run_seq, jobs.c.lane, jobs.c.finished_at).where(
        jobs.c.id == job_id
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise JobNotFound(job_id)
    return LockedJob(JobState(row.state), int(row.run_seq), row.lane, row.finished_at)


def standard_notifications(job: Job, at: datetime) -> list[Notification]:
    """What people hear about a transition: the owner on states that need them, the job's channel when it
    ends."""
    notes: list[Notification] = []
    stamp = f"{job.state.value}:{job.run_seq}:{at.timestamp():.6f}"
    payload = {"job_id": job.id, "state": job.state.value, "reason": job.reason, "type": job.type}
    if job.state in ATTENTION_STATES and job.owner:
        notes.append(
            Notification(
                kind="job.attention",
                dedup_key=f"job:{job.id}:attention:{stamp}",
                target=job.owner,
                payload=payload,
                job_id=job.id,
            )
        )
    if job.state in TERMINAL_STATES and job.channel:
        notes.append(
            Notification(
                kind="job.finished",
                dedup_key=f"job:{job.id}:finished:{stamp}",
                target=job.channel,
                payload=payload,
                job_id=job.id,
            )
        )
    return notes


async def close_open_decisions(conn: AsyncConnection, job_id: int, *, at: datetime, actor: str) -> None:
    """Cancel a job's open decisions (its messages get updated through the outbox)."""
    closed = await conn.execute(
        decisions.update()
        .where(decisions.c.job_id == job_id, decisions.c.state == DecisionState.OPEN.value)
        .values(state=DecisionState.CANCELLED.value, answered_at=at)
        .returning(decisions.c.id, decisions.c.channel)
    )
    rows = closed.all()
    await insert_events(
        conn,
        [
            event_row(job_id, at=at, actor=actor, kind="decision_cancelled", decision_id=row.id)
            for row in rows
        ],
    )
    await insert_notifications(
        conn,
        [
            Notification(
                kind="decision.closed",
                dedup_key=f"decision:{row.id}:closed",
                target=row.channel,
                payload={"decision_id": row.id, "state": DecisionState.CANCELLED.value},
                job_id=job_id,
                decision_id=row.id,
            )
            for row in rows
        ],
        at,
    )


async def transition(
    conn: AsyncConnection,
    job_id: int,
    to: JobState,
    *,
    at: datetime,
    actor: str,
    kind: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    from_states: Iterable[JobState] | None = None,
    run_seq: int | None = None,
    values: dict[str, Any] | None = None,
    notifications: Sequence[Notification] = (),
    decision_id: int | None = None,
) -> tuple[Job, JobState]:
    """Move a job to `to` if the table allows it from its current state (narrowed by `from_states`, and
    by `run_seq` for a worker's own run). Raises InvalidTransition otherwise. Returns the job and its old
    state."""
    allowed = sources_of(to) if from_states is None else sources_of(to) & frozenset(from_states)
    locked = await lock_job_state(conn, job_id)
    current, current_seq = locked.state, locked.run_seq
    if current not in allowed or (run_seq is not None and current_seq != run_seq):
        raise InvalidTransition(job_id, current.value, to.value)
    sets: dict[str, Any] = {"state": to.value, "updated_at": at, **(values or {})}
    if to in TERMINAL_STATES:
        sets.setdefault("finished_at", at)
        sets["sla_next_at"] = None
    else:
        sets["finished_at"] = None
    sets.setdefault("reason", reason)  # a transition without a reason clears the last one
    updated = await conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.state == current.value, jobs.c.run_seq == current_seq)
        .values(**sets)
        .returning(*jobs.c)
    )
    row = updated.first()
    if row is None:  # SQLite has no row lock, but BEGIN IMMEDIATE already serialises writers
        raise InvalidTransition(job_id, current.value, to.value)
    job = row_to_job(row)
    await insert_events(
        conn,
        [
            event_row(
                job_id,
                at=at,
                actor=actor,
                kind=kind or to.value,
                from_state=current,
                to_state=to,
                reason=reason,
                details=details,
                decision_id=decision_id,
            )
        ],
    )
    if to in TERMINAL_STATES or current in TERMINAL_STATES:
        await add_finished(conn, _count_changes(job, locked, at))
    if to in TERMINAL_STATES:
        await close_open_decisions(conn, job_id, at=at, actor=actor)
    await insert_notifications(conn, [*notifications, *standard_notifications(job, at)], at)
    return job, current


def _count_changes(job: Job, before: LockedJob, at: datetime) -> Counter[CountKey]:
    """A finished job counted where it now finishes, or no longer counted where it finished before."""
    changes: Counter[CountKey] = Counter()
    if job.state in TERMINAL_STATES:
        changes[key_for(job.lane, job.state, job.finished_at or at)] += 1
    if before.state in TERMINAL_STATES:
        changes[key_for(before.lane, before.state, before.finished_at or at)] -= 1
    return changes
